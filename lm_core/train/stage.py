"""The pretrain stage: chunk artifact -> trained weights, tracked in MLflow, resumable.

    pretrain/<fp>/
        model.safetensors     the final weights
        model_config.json     GPTConfig (what `GPT(GPTConfig(**json))` needs)
        tokenizer.json        the tokenizer the model was trained with
        train_state.pt        optimizer + RNG + data position of the last step (to continue)
        metrics.json          final validation metrics and the whole logged history
        samples.json          sampled continuations at each evaluation
        loss_curve.png

The run builds in `pretrain/.partial-<fp>/` with its checkpoints; a run killed at any moment
resumes from the last checkpoint on the next call, in the same MLflow run, and publishes what an
uninterrupted run would have (the checkpoints keep the history and samples). A metric the killed
process logged already at a step is not logged at that step again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lm_core.config import Config
from lm_core.mlflow_ui import mlflow_links
from lm_core.model_folder import CONFIG, TOKENIZER, write_config
from lm_core.progress import NullProgress, Progress
from lm_core.secrets import mask_url
from lm_core.stages import Inputs, StageRun, UiArtifact
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.tokenize.stage import TOKENIZER_FILE
from lm_core.tracking import MlflowTracker, chart_name, flatten, log_chunk_data, loss_curve_png
from lm_core.train import checkpoint as ckpt
from lm_core.train.checkpoint import RUN_ID_FILE
from lm_core.train.fingerprint import pretrain_key
from lm_core.train.loop import TrainData, TrainResult, train
from lm_core.workspace import ArtifactError, ArtifactRef, StageKey, Workspace, write_json_atomic

log = logging.getLogger(__name__)

SPEC_FILE = "_launch.json"
NODE_SPEC_FILE = "_spec-node{}.json"  # the launch spec of a node other than node 0
JOIN_PUBLISH_TIMEOUT_S = 1800  # a joining node waits this long for node 0 to publish after training


def pretrain_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_pretrain(cfg, inputs["chunk"], ws, run.progress, run.run_tags, key=key)


def pretrain_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """The weights, the validation figures, and the MLflow run, linked when a UI shows it."""
    s = ref.stats
    run_id = s.get("mlflow_run_id", "")
    links = mlflow_links(cfg.tracking_uri, run_id)
    link = links.get("MLflow run")
    run = f"[{run_id}]({link})" if link else f"`{run_id}` in `{mask_url(cfg.tracking_uri)}`"
    if "MLflow experiment" in links:
        run += f" (the experiment's loss curves: [{cfg.experiment}]({links['MLflow experiment']}))"
    summary = (
        f"**pretrain** `{ref.fingerprint}`\n\n- weights: `{ref.path}/model.safetensors`\n- MLflow run: {run}\n"
        f"- validation: loss {s.get('val_loss', float('nan')):.4f}, bits/byte {s.get('val_bpb', float('nan')):.4f}\n"
    )
    shown = [UiArtifact("markdown", "pretrain-summary", summary, "the model, its validation figures, its MLflow run")]
    if link:
        text = f"MLflow run of pretrain {ref.fingerprint}"
        shown.append(UiArtifact("link", "pretrain-mlflow-run", link, link_text=text))
    return shown


def run_pretrain(
    cfg: Config,
    chunk: ArtifactRef,
    ws: Workspace,
    progress: Progress = NullProgress(),
    run_tags: dict[str, str] | None = None,
    key: StageKey | None = None,
) -> ArtifactRef:
    """Train a model on `chunk` into a published `pretrain` artifact (or return the published
    one). With `pretrain.distributed.nproc > 1` or several nodes, launches torchrun. `key`:
    computed already (`pretrain_key`)."""
    key = key or pretrain_key(cfg, {"chunk": chunk}, ws)
    fp = key.fingerprint
    if cfg.pretrain.distributed.node_rank > 0:
        return _join_training(cfg, chunk, ws, fp)
    with ws.build("pretrain", fp, config=key.config, inputs=key.inputs, resume=True) as b:
        if b.published:
            return b.ref
        tracker = _tracker(cfg, b.dir, fp, chunk, run_tags or {})
        try:
            dist_cfg = cfg.pretrain.distributed
            if dist_cfg.nproc > 1 or dist_cfg.nnodes > 1:
                result = _launch_torchrun(cfg, chunk, b.dir, tracker.run_id)
            else:
                result = train(
                    cfg.pretrain,
                    cfg.model,
                    TrainData.from_chunk(chunk.dir),
                    b.dir,
                    cfg.seed,
                    tracker=NewStepsOnly(tracker),
                    progress=progress,
                    sample_fn=sampler(cfg, chunk.dir),
                )
                result = _summary(result)
            b.stats = _finish(b.dir, chunk, result, tracker, fp)
        except BaseException:
            try:
                tracker.finish(failed=True)
            except Exception as e:  # a full disk fails MLflow's store too: the first error is the one to show
                log.warning("could not mark MLflow run %s failed: %s", tracker.run_id, e)
            raise
        tracker.finish()
    assert b.ref is not None
    return b.ref


def _tracker(cfg: Config, partial: Path, fp: str, chunk: ArtifactRef, run_tags: dict[str, str]) -> MlflowTracker:
    """A new MLflow run, or the interrupted run's own when resuming."""
    chunk_inputs = chunk.manifest()["inputs"]
    run_id_path = partial / RUN_ID_FILE
    run_id = run_id_path.read_text().strip() if run_id_path.is_file() else None
    tags = {
        "lmforge.stage": "pretrain",
        "lmforge.fingerprint": fp,
        "lmforge.chunk": chunk.fingerprint,
        "lmforge.tokenizer": chunk_inputs.get("tokenize", ""),
        "lmforge.data": _data_lineage(chunk),
        **run_tags,
    }
    tracker = MlflowTracker(
        cfg.tracking_uri,
        cfg.experiment,
        f"pretrain-{fp[:8]}",
        tags,
        system_metrics=cfg.tracking.system_metrics,
        run_id=run_id,
    )
    if run_id is None:
        run_id_path.write_text(tracker.run_id)
        tracker.log_params(
            flatten(
                "",
                {
                    "model": cfg.model.model_dump(mode="json"),
                    "pretrain": cfg.pretrain.model_dump(mode="json"),
                    "seed": cfg.seed,
                },
            )
        )
        tracker.log_json(cfg.model_dump(mode="json"), "config.json")
    else:
        tracker.set_tags({"lmforge.resumed": "true"})
    log_chunk_data(tracker, chunk.dir, chunk.fingerprint, chunk.stats)  # again on resume: a no-op if logged
    return tracker


class NewStepsOnly:
    """The training loop's tracker for a run that may resume: a metric already logged at a step
    (by a process killed after its last checkpoint, which the resumed run repeats from there) is
    not logged again at that step, so MLflow holds each step of each metric once."""

    def __init__(self, tracker: MlflowTracker):
        self.tracker = tracker
        client, run_id = tracker.client, tracker.run_id
        self.logged = {
            key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics
            if not key.startswith("system/")
        }

    def log_params(self, params: dict[str, Any]) -> None:
        self.tracker.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        new = {k: v for k, v in metrics.items() if step > self.logged.get(chart_name(k), -1)}  # as MLflow names it
        if new:
            self.tracker.log_metrics(new, step)


def _data_lineage(chunk: ArtifactRef) -> str:
    """The fingerprints of the stages upstream of `chunk`, e.g. tokenize:ab12 clean:cd34 crawl:ef56."""
    upstream = Workspace(chunk.dir.parent.parent).upstream("chunk", chunk.fingerprint)
    return " ".join(f"{stage}:{fp}" for stage, fp in upstream.items())


def sampler(cfg: Config, chunk_dir: Path):
    """Continuations of the configured prompts, sampled with a generator seeded by the step so
    that sampling never disturbs the training RNG."""
    tok = load_tokenizer(chunk_dir / TOKENIZER_FILE)
    eot = tok.token_to_id("<|endoftext|>")
    p = cfg.pretrain

    def sample(model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        was_training = model.training
        model.eval()
        prompts = [tok.encode(s).ids or [eot] for s in p.sample_prompts]
        room = model.cfg.seq_len - max(len(x) for x in prompts)
        gen = torch.Generator(device=model.embed.weight.device).manual_seed(step)
        outs = (
            model.generate(
                prompts, min(p.sample_tokens, room), temperature=0.8, top_k=50, stop_tokens=(eot,), generator=gen
            )
            if room > 0
            else [[] for _ in prompts]
        )
        model.train(was_training)
        return [{"step": step, "prompt": s, "text": tok.decode(o)} for s, o in zip(p.sample_prompts, outs, strict=True)]

    return sample


def _summary(result: TrainResult) -> dict[str, Any]:
    last = result.history[-1] if result.history else {}
    return {
        "plan": result.plan.to_params(),
        "steps": result.steps_done,
        "resumed_from": result.resumed_from,
        "final": result.final,
        "history": result.history,
        "samples": result.samples,
        "seconds": result.seconds,
        "loader_wait_fraction": result.loader_wait_fraction,
        "tokens_per_s": last.get("tokens_per_s"),
        "mfu": last.get("mfu"),  # of the card's published peak
        "matmul_share": last.get("matmul_share"),  # of a matmul measured on the device (a CPU)
        "peak": result.peak,
        "matmul_share_clamped": result.matmul_share_clamped or None,
    }


def _finish(out: Path, chunk: ArtifactRef, summary: dict[str, Any], tracker: MlflowTracker, fp: str) -> dict:
    """Lay out the published artifact, log its files to MLflow, and return its stats."""
    if not (out / ckpt.WEIGHTS).is_file():
        raise RuntimeError(f"training ended without final weights in {out}")
    plan = {k.removeprefix("plan."): v for k, v in summary["plan"].items() if k.startswith("plan.")}
    model_cfg = {k.removeprefix("gpt."): v for k, v in summary["plan"].items() if k.startswith("gpt.")}
    write_config(out, model_cfg)
    shutil.copy2(chunk.dir / TOKENIZER_FILE, out / TOKENIZER)
    write_json_atomic(out / "metrics.json", {"final": summary["final"], "history": summary["history"]})
    write_json_atomic(out / "samples.json", summary["samples"])
    loss_curve_png(summary["history"], out / "loss_curve.png", f"pretrain {fp[:8]}")
    for name in (CONFIG, "metrics.json", "samples.json", "loss_curve.png"):
        if (out / name).is_file():
            tracker.log_artifact(out / name)
    # The checkpoints go last: a run killed before this point resumes from its final checkpoint.
    last = ckpt.step_dirs(out / "checkpoints")
    if last:
        shutil.copy2(last[-1] / ckpt.STATE, out / ckpt.STATE)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for stray in (RUN_ID_FILE, SPEC_FILE, "_summary.json", *(p.name for p in out.glob(NODE_SPEC_FILE.format("*")))):
        (out / stray).unlink(missing_ok=True)
    stats = {
        "rows": None,
        "params": plan["params"],
        "steps": summary["steps"],
        "tokens": plan["token_budget"],
        "seconds": round(summary["seconds"], 1),
        "tokens_per_s": summary["tokens_per_s"],
        "mfu": summary.get("mfu"),
        "matmul_share": summary.get("matmul_share"),
        "throughput_peak": summary.get("peak") or None,
        "matmul_share_clamped": summary.get("matmul_share_clamped"),
        "loader_wait_fraction": summary["loader_wait_fraction"],
        "mlflow_run_id": tracker.run_id,
        "resumed_from": summary["resumed_from"],
        **{k: v for k, v in summary["final"].items()},
    }
    tracker.set_tags({"lmforge.artifact": str(out.parent / fp)})
    return {k: v for k, v in stats.items() if v is not None}


# ----------------------------------------------------------------------------- torchrun


def _launch_torchrun(cfg: Config, chunk: ArtifactRef, out: Path, run_id: str | None) -> dict[str, Any] | None:
    """Run `lm_core.train.worker` on this node's ranks with torchrun; rank 0 (on node 0) logs to
    `run_id` and writes its summary next to the checkpoints, which is returned on node 0."""
    d = cfg.pretrain.distributed
    spec = {
        "config": cfg.model_dump(mode="json"),
        "chunk_dir": str(chunk.dir),
        "out_dir": str(out),
        "tracking_uri": cfg.tracking_uri,
        "run_id": run_id,
    }
    spec_file = out / (SPEC_FILE if d.node_rank == 0 else NODE_SPEC_FILE.format(d.node_rank))  # one per node
    write_json_atomic(spec_file, spec)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={d.nproc}",
        f"--nnodes={d.nnodes}",
        f"--node-rank={d.node_rank}",
        f"--master-addr={d.master_addr}",
        f"--master-port={d.master_port}",
        "-m",
        "lm_core.train.worker",
        str(spec_file),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // d.nproc))),
    }
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {proc.returncode}; the run resumes from its last checkpoint")
    return json.loads((out / "_summary.json").read_text()) if d.node_rank == 0 else None


def _join_training(cfg: Config, chunk: ArtifactRef, ws: Workspace, fp: str) -> ArtifactRef:
    """Node `node_rank` > 0 of a multi-node training. Its ranks train; node 0 alone opens the
    MLflow run, writes checkpoints and publishes, into the workspace the nodes share (ranks
    resume from its checkpoints). So this node opens no run and publishes nothing: it waits for
    node 0's artifact and returns it."""
    if ws.is_published("pretrain", fp):
        return ws.ref("pretrain", fp)
    out = ws.partial_dir("pretrain", fp)
    out.mkdir(parents=True, exist_ok=True)
    _launch_torchrun(cfg, chunk, out, run_id=None)
    deadline = time.monotonic() + JOIN_PUBLISH_TIMEOUT_S
    while not ws.is_published("pretrain", fp):  # node 0 still writes the model and logs it
        if time.monotonic() > deadline:
            raise ArtifactError(
                f"node {cfg.pretrain.distributed.node_rank} finished training, but node 0 has not published "
                f"pretrain/{fp} in {ws.root} within {JOIN_PUBLISH_TIMEOUT_S} s: is the workspace shared by the nodes?"
            )
        time.sleep(2)
    return ws.ref("pretrain", fp)
