"""The finetune stage: a workspace model (pretrain or finetune artifact) -> a chat model.

    finetune/<fp>/
        model.safetensors, model_config.json, tokenizer.json   a model folder like pretrain's
        chat.json                 marks a chat model: prompts are user messages (the template)
        data/train.jsonl          the chats (or preference pairs) it learned from
        data/heldout.jsonl        held-out chats: evaluation scores BLEU/chrF on them
        data/heldout_preferences.jsonl   dpo: held-out preference pairs
        metrics.json              held-out figures before and after, and the logged history
        int8/                     with `quantize`: int8 weights and the compression report

The base model is named by `finetune.base`: `pretrain` (the lifecycle's own model), a workspace
fingerprint or `latest`, a training checkpoint folder, or a registered model (`models:/<name>@<alias>` or `/<version>`),
which is traced back to the workspace artifact it was registered from (its lineage tags). The
fine-tuned model keeps its base's chunk lineage, so it is evaluated on the same validation
blocks. Without chat data the chats are question/answer pairs built from the cleaned corpus
that the base model was pretrained on.

This module is light (no torch): it decides whether there is work to do; `build.py` does it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lm_core.config import Config
from lm_core.finetune.artifact import DATA_DIR, FinetuneError
from lm_core.mlflow_ui import mlflow_links
from lm_core.model_spec import ModelArtifactNotFound, find_model_artifact
from lm_core.progress import NullProgress, Progress
from lm_core.stages import Inputs, StageRun, UiArtifact
from lm_core.workspace import MANIFEST, ArtifactRef, StageKey, Workspace, content_digest, fingerprint, read_manifest

STAGE = "finetune"
CODE_VERSION = 2  # 2: question/answer chats held out from the validation documents only


# ----------------------------------------------------------------------------- inputs (light)


def resolve_base(cfg: Config, pretrain: ArtifactRef | None, ws: Workspace) -> ArtifactRef:
    """The workspace model artifact (or training checkpoint) `finetune.base` names."""
    spec = cfg.finetune.base
    if spec == "pretrain":
        if pretrain is None:
            return ws.resolve("pretrain", "latest")
        return pretrain
    if Path(spec).expanduser().is_dir():
        return _folder_artifact(Path(spec).expanduser().resolve(), cfg.tracking_uri, ws)
    try:
        return find_model_artifact(spec, ws, cfg.tracking_uri)
    except ModelArtifactNotFound as e:
        raise FinetuneError(f"finetune.base {e}") from None


def _folder_artifact(path: Path, tracking_uri: str, ws: Workspace) -> ArtifactRef:
    """A published model artifact of the workspace by its folder, or a training checkpoint
    (`pretrain/.partial-<fp>/checkpoints/step-N` of an unfinished or interrupted training): its
    weights' digest is its identity, and its training's MLflow run names the chunk it learned from."""
    if (path / MANIFEST).is_file():
        try:
            return find_model_artifact(str(path), ws)
        except ModelArtifactNotFound as e:
            raise FinetuneError(f"finetune.base {e}") from None
    from lm_core.train import checkpoint as ckpt  # torch: only for a checkpoint folder

    if not ckpt.is_checkpoint(path):
        raise FinetuneError(f"finetune.base {path} is neither a model artifact of {ws.root} nor a training checkpoint")
    chunk = ckpt.training_chunk(path, tracking_uri)
    if not chunk or not ws.is_published("chunk", chunk):
        raise FinetuneError(f"the training of checkpoint {path} cannot be traced to a chunk artifact of {ws.root}")
    return ArtifactRef(
        stage="checkpoint", fingerprint=_digest([str(path / ckpt.WEIGHTS)]), path=str(path), stats={"chunk": chunk}
    )


def lineage(base: ArtifactRef, ws: Workspace) -> dict[str, str]:
    """The chunk artifact a model artifact (or checkpoint) was trained on, and the clean
    artifact upstream of it while it is published (else fine-tuning needs chat data of its own)."""
    inputs = base.stats if base.stage == "checkpoint" else read_manifest(base.dir)["inputs"]
    chunk = inputs.get("chunk")
    if chunk is None:
        raise FinetuneError(f"{base.dir} names no chunk artifact: not a model this workspace trained")
    clean = ws.upstream("chunk", chunk).get("clean")
    return {"chunk": chunk, **({"clean": clean} if clean else {})}


def _digest(paths: list[str]) -> str:
    try:
        return content_digest(paths)
    except OSError as e:
        raise FinetuneError(f"finetune data file {e.filename} cannot be read") from None


def finetune_inputs(cfg: Config, base: ArtifactRef, ws: Workspace) -> dict[str, str]:
    ft = cfg.finetune
    inputs = {base.stage: base.fingerprint, **lineage(base, ws)}
    files = ft.preference_files if ft.method == "dpo" else ft.chat_files
    if files:
        inputs["data_files"] = _digest(files)
    datasets = ft.preference_datasets if ft.method == "dpo" else ft.chat_datasets
    if datasets:
        from lm_core.finetune.data import dataset_local_files  # `datasets`: only when one is named

        local = [f for d in datasets for f in dataset_local_files(d.model_dump())]
        inputs["datasets"] = _digest(local) if local else "remote"
    if not (files or datasets) and "clean" not in inputs:
        raise FinetuneError(
            f"no chat data given (finetune.chat_files, chat_datasets) and the corpus of {base.stage} "
            f"{base.fingerprint} is not in the workspace to build question/answer pairs from"
        )
    return inputs


def decisive(cfg: Config) -> dict[str, Any]:
    fields = cfg.finetune.fingerprint_fields()
    fields.pop("base")  # resolved to an artifact: an input
    return {"finetune": fields, "seed": cfg.seed}


def finetune_fingerprint(cfg: Config, base: ArtifactRef, ws: Workspace) -> str:
    return finetune_key(cfg, {"base": base}, ws).fingerprint


def finetune_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    found = finetune_inputs(cfg, inputs["base"], ws)
    fp = fingerprint(STAGE, decisive(cfg), found, CODE_VERSION)
    return StageKey(stage=STAGE, fingerprint=fp, config=decisive(cfg), inputs=found)


def find_base(cfg: Config, spec: str | None, ws: Workspace) -> ArtifactRef:
    """The base model `spec` names (see `resolve_base`); None: the one `finetune.base` names."""
    if spec:
        cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"base": spec})})
    return resolve_base(cfg, None, ws)


# ----------------------------------------------------------------------------- the stage


def finetune_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_finetune(cfg, inputs["base"], ws, run.progress, run.run_tags, key=key)


def finetune_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """What it learned from, its held-out figures before and after, and its MLflow run, linked
    when a UI shows it."""
    s = ref.stats
    shown = ", ".join(f"{k} {v:.4g}" for k, v in s.items() if k.startswith(("heldout_", "initial_heldout_")))
    run_id = s.get("mlflow_run_id") or ""
    link = mlflow_links(cfg.tracking_uri, run_id).get("MLflow run")
    run = f"[{run_id}]({link})" if link else f"`{run_id}`"
    summary = (
        f"**finetune** ({s.get('method')}) `{ref.fingerprint}` from `{s.get('base')}`\n\n"
        f"- {s.get('train_examples')} training examples ({s.get('source')}), {s.get('heldout_examples')} held out\n"
        f"- {s.get('steps')} steps; held-out: {shown}\n- MLflow run: {run}\n"
    )
    what = "the chat model, its held-out figures, its MLflow run"
    artifacts = [UiArtifact("markdown", "finetune-summary", summary, what)]
    if link:
        text = f"MLflow run of finetune {ref.fingerprint}"
        artifacts.append(UiArtifact("link", "finetune-mlflow-run", link, link_text=text))
    return artifacts


def run_finetune(
    cfg: Config,
    base: ArtifactRef,
    ws: Workspace,
    progress: Progress = NullProgress(),
    run_tags: dict[str, str] | None = None,
    key: StageKey | None = None,
) -> ArtifactRef:
    """Fine-tune `base` into a published `finetune` artifact, or return the published one.
    `key`: computed already (`finetune_key`)."""
    key = key or finetune_key(cfg, {"base": base}, ws)
    fp, inputs = key.fingerprint, key.inputs
    with ws.build(STAGE, fp, config=key.config, inputs=inputs) as b:
        if b.published:
            return b.ref
        from lm_core.finetune import build  # torch, MLflow: only when there is training to do
        from lm_core.tracking import log_example_files

        t0 = time.perf_counter()
        examples = build.examples(cfg.finetune, ws, inputs, cfg.seed)
        build.write_examples(b.dir / DATA_DIR, examples)
        tracker = build.tracker(cfg, fp, base, inputs, run_tags or {})
        try:
            log_example_files(tracker, b.dir / DATA_DIR, ws.artifact_dir(STAGE, fp) / DATA_DIR)
            model, result, report = build.train(cfg, base, examples, b.dir, tracker, progress)
            stats = build.finish(cfg, b.dir, base, model, result, report, examples, tracker)
        except BaseException:
            tracker.finish(failed=True)
            raise
        tracker.finish()
        b.stats = {**stats, "mlflow_run_id": tracker.run_id, "seconds": round(time.perf_counter() - t0, 1)}
    assert b.ref is not None
    return b.ref
