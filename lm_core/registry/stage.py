"""The register stage: an evaluated model -> a version in the MLflow model registry.

    register/<fp>/
        registration.json   name, version, model URI, aliases, decision and its reason
        comparison.json     the challenger's and the champion's scores on the same sets

Steps: log the evaluation into the model's MLflow run (metrics `eval.<name>`, the results
files); score the current champion, if any, on the very pairs and texts the challenger was
scored on; log the model as a pyfunc and register it with the champion/challenger gate.

The fingerprint (`fingerprint.py`, light: a cached run imports neither MLflow nor torch) covers
the evaluate artifact (hence the model and its data), the gate, the
registered name and the store: an unchanged run registers nothing new. The fingerprint is also
the registration's key in MLflow (`register.py`): a registration killed at any point (after
MLflow made the version, before its aliases, before the int8 version, before the artifact was
published) is completed by the next run, which ends with the same versions, aliases and
artifact as a run never interrupted, the champion's scores read back from the version's tags
rather than measured again.

The evaluation's scores go into the model's run as `eval.<name>` metrics (MLflow's charts show
them after the training curves: `lm_core.tracking`); its counts (pairs, tokens scored) as
`eval.<name>` tags. Versions and the registered model get descriptions: what the model is, what
it learned from, its scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from lm_core.config import Config
from lm_core.evaluate.errors import EvalSetError
from lm_core.evaluate.preferences import published_preference_sets
from lm_core.evaluate.sets import published_pair_sets, read_text_sets
from lm_core.evaluate.stage import check_tokenizer, evaluate_model
from lm_core.mlflow_ui import mlflow_links
from lm_core.model_spec import registry_client
from lm_core.progress import NullProgress, Progress
from lm_core.registry.describe import describe_model, describe_registered_model
from lm_core.registry.fingerprint import STAGE, model_name, register_key, scored_stage
from lm_core.registry.register import (
    AWAITING,
    RegistrationResult,
    current_champion,
    find_registration,
    register_model,
    register_variant,
)
from lm_core.registry.resolve import load_text_model
from lm_core.secrets import mask_url
from lm_core.stages import Inputs, StageRun, UiArtifact
from lm_core.tracking import MlflowTracker
from lm_core.ui_text import md_escape, model_label, ordered
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint, read_manifest, write_json_atomic

EVAL_PREFIX = "eval."  # evaluation metrics in the model's run, apart from training's own val_*
EVAL_FILES = ("metrics.json", "signatures.json", "samples.jsonl")


def register_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_register(cfg, inputs["evaluate"], ws, run.progress, run.run_tags, key=key)


def register_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """The challenger's and the champion's scores side by side, the decision, and links to MLflow's
    UI when one shows the store; keyed by the model registered, `base` or `chat`: a lifecycle
    registers both."""
    s = ref.stats
    label = model_label(ref.manifest()["inputs"])
    rows = s.get("comparison", {}).get("rows", [])
    champion_v = s.get("comparison", {}).get("champion_version")
    table = ordered(
        ({**r, "champion": "" if r["champion"] is None else r["champion"]} for r in rows),
        ("metric", "challenger", "champion"),
    )
    against = f"champion v{champion_v}, scored on the same sets" if champion_v else "no champion"
    # the configured URI (the stats hold it masked), so that the run is found on a server with a password
    links = mlflow_links(cfg.tracking_uri, s["mlflow_run_id"], s["name"], s["version"])
    decision = (
        f"**{s['name']} v{s['version']}**: {s['decision']} (aliases: {', '.join('@' + a for a in s['aliases'])})\n\n"
        f"{md_escape(s['reason'])}\n\n- model URI: `{s['model_uri']}`\n- MLflow run: `{s['mlflow_run_id']}` in "
        f"`{s['tracking_uri']}`\n- serve: `mlflow models serve -m models:/{s['name']}@champion --env-manager local`\n"
        + "".join(f"- [{text}]({url})\n" for text, url in links.items())
    )
    shown = [
        UiArtifact(
            "table",
            f"register-comparison-{label}",
            table or [{"metric": "(none)", "challenger": "", "champion": ""}],
            description=f"{s['name']} v{s['version']} (challenger) against {against}",
        ),
        UiArtifact("markdown", f"register-decision-{label}", decision, f"{s['name']} v{s['version']}: {s['decision']}"),
    ]
    if "registered version" in links:
        text = f"{s['name']} v{s['version']} in the MLflow model registry"
        version_page = links["registered version"]
        shown.append(UiArtifact("link", f"register-mlflow-version-{label}", version_page, link_text=text))
    if "MLflow run" in links:
        text = f"MLflow run of {s['name']} v{s['version']}"
        shown.append(UiArtifact("link", f"register-mlflow-run-{label}", links["MLflow run"], link_text=text))
    return shown


def run_register(
    cfg: Config,
    evaluation: ArtifactRef,
    ws: Workspace,
    progress: Progress = NullProgress(),
    run_tags: dict[str, str] | None = None,
    key: StageKey | None = None,
) -> ArtifactRef:
    """Register the model that `evaluation` scored (see the module's docstring); returns the
    published `register` artifact, or the one already published. `key`: computed already
    (`register_key`)."""
    key = key or register_key(cfg, {"evaluate": evaluation}, ws)
    fp, inputs = key.fingerprint, key.inputs
    with ws.build(STAGE, fp, config=key.config, inputs=inputs) as b:
        if b.published:
            return b.ref
        model = ws.ref(scored_stage(inputs), inputs[scored_stage(inputs)])
        chunk = ws.ref("chunk", inputs["chunk"])
        run_id = _model_run(cfg, model, run_tags or {})
        metrics = json.loads((evaluation.dir / "metrics.json").read_text())
        _log_evaluation(cfg.tracking_uri, run_id, evaluation, metrics)

        # a run killed after MLflow made the version finds it, completed; else the champion is scored
        result = find_registration(cfg.tracking_uri, inputs["name"], fp)
        if result is None:
            champion, champion_metrics = _score_champion(cfg, inputs["name"], evaluation, chunk, progress)
            result = register_model(
                cfg.registry,
                cfg.tracking_uri,
                run_id,
                model.dir,
                scores(metrics),
                champion_metrics,
                tags=_lineage(model, chunk, evaluation) | _base_versions(cfg, model),
                name=inputs["name"],
                champion_version=champion.version if champion else None,
                key=fp,
                about=describe_model(ws, model, chunk),
                model_description=describe_registered_model(ws, inputs["name"], model, chunk),
            )
        comparison = _comparison(metrics, result.champion_scores, result.compared_with)
        int8_version = _register_int8(cfg, run_id, model, result, fp)
        registration = {
            **({"int8_version": int8_version} if int8_version else {}),
            "name": result.name,
            "version": result.version,
            "model_uri": result.model_uri,
            "aliases": list(result.aliases),
            "champion": result.champion,
            "decision": result.decision,
            "reason": result.reason,
            # registry.human_review: the gate said champion; people decide (lm_core.registry.promote)
            **({"awaiting_review": True, "gate_decision": "champion"} if result.review == AWAITING else {}),
            "mlflow_run_id": run_id,
            "tracking_uri": mask_url(cfg.tracking_uri),
        }
        write_json_atomic(b.dir / "registration.json", registration)
        write_json_atomic(b.dir / "comparison.json", comparison)
        b.stats = {**registration, "rows": None, "comparison": comparison}
    assert b.ref is not None
    return b.ref


# ----------------------------------------------------------------------------- MLflow run


def _model_run(cfg: Config, model: ArtifactRef, run_tags: dict[str, str]) -> str:
    """The MLflow run that trained the model; a new run in the experiment when the model was
    trained against another tracking store (its run is not in this one)."""
    client = MlflowClient(cfg.tracking_uri)
    run_id = model.stats.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except MlflowException:
            pass
    tags = {"lmforge.stage": STAGE, f"lmforge.{model.stage}": model.fingerprint}
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:  # one made by an earlier, interrupted registration of this model
        found = client.search_runs(
            [experiment.experiment_id], " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()), max_results=1
        )
        if found:
            return found[0].info.run_id
    tracker = MlflowTracker(cfg.tracking_uri, cfg.experiment, f"register-{model.fingerprint[:8]}", {**tags, **run_tags})
    tracker.finish()
    return tracker.run_id


def is_count(name: str) -> bool:
    """How many pairs or tokens an evaluation scored: what its scores rest on, not a score."""
    return name.startswith("pairs.") or name.endswith(("_tokens", ".tokens"))


def scores(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not is_count(k)}


def _log_evaluation(tracking_uri: str, run_id: str, evaluation: ArtifactRef, metrics: dict[str, float]) -> None:
    """Scores as metrics, counts as tags. Logged again by a rerun: the same metric at the same
    time and step is stored once."""
    client = MlflowClient(tracking_uri)
    stamp = int(Path(evaluation.dir / "metrics.json").stat().st_mtime * 1000)
    counts = {k: v for k, v in metrics.items() if is_count(k)}
    client.log_batch(
        run_id,
        metrics=[Metric(EVAL_PREFIX + k, float(v), stamp, 0) for k, v in scores(metrics).items()],
        tags=[RunTag("lmforge.evaluate", evaluation.fingerprint)]
        + [RunTag(EVAL_PREFIX + k, f"{v:g}") for k, v in counts.items()],
    )
    for name in EVAL_FILES:
        if (evaluation.dir / name).is_file():
            client.log_artifact(run_id, str(evaluation.dir / name), "evaluation")
    results = evaluation.stats.get("results", {}).get("markdown")
    if results:
        client.log_text(run_id, results, "evaluation/results.md")


def _lineage(model: ArtifactRef, chunk: ArtifactRef, evaluation: ArtifactRef) -> dict[str, str]:
    """The fingerprints a version comes from; the tokenizer's once, as `lmforge.tokenizer` (a
    model's manifest names it too, by its stage: `tokenize`)."""
    chunk_inputs = read_manifest(chunk.dir)["inputs"]
    model_manifest = read_manifest(model.dir)
    return {
        **{f"lmforge.{k}": str(v) for k, v in model_manifest["inputs"].items() if k not in ("chunk", "tokenize")},
        f"lmforge.{model.stage}": model.fingerprint,
        "lmforge.chunk": chunk.fingerprint,
        "lmforge.tokenizer": chunk_inputs.get("tokenize", ""),
        "lmforge.config": fingerprint("config", model_manifest.get("config", {}), {}, 0),
        "lmforge.evaluate": evaluation.fingerprint,
        **({"lmforge.method": str(model.stats.get("method"))} if model.stage == "finetune" else {}),
    }


def _register_int8(cfg: Config, run_id: str, model: ArtifactRef, result: RegistrationResult, fp: str) -> str | None:
    """A fine-tuned model compressed to int8 (`finetune.quantize`) becomes its own version, tagged
    `lmforge.quantized=int8` and aliased `@int8`, with its size, speed and loss change; its key
    `<fp>-int8` finds it again after an interruption."""
    folder = model.dir / "int8"
    if not folder.is_dir():
        return None
    report = json.loads((folder / "compression.json").read_text())
    tags = {
        "lmforge.quantized": "int8",
        "lmforge.float_version": result.version,
        f"lmforge.{model.stage}": model.fingerprint,
        **{f"int8.{k}": f"{v:.6g}" for k, v in report.items() if isinstance(v, int | float)},
    }
    description = (
        f"Dynamic int8 copy of v{result.version}: {report['size_ratio']:.2f}x smaller, generation "
        f"{report['generate_speedup']:.2f}x faster on CPU, "
        f"loss {report['float_loss']:.4f} -> {report['int8_loss']:.4f}."
    )
    return register_variant(cfg.tracking_uri, run_id, folder, result.name, "int8", tags, description, f"{fp}-int8")


def _base_versions(cfg: Config, model: ArtifactRef) -> dict[str, str]:
    """A fine-tuned model's lineage in the registry: the versions its base model was registered as."""
    base_fp = read_manifest(model.dir)["inputs"].get("pretrain")
    if model.stage != "finetune" or not base_fp:
        return {}
    name = model_name(cfg, "pretrain")
    try:
        found = registry_client(cfg.tracking_uri).search_model_versions(
            f"name = '{name}' and tag.`lmforge.pretrain` = '{base_fp}'"
        )
    except Exception:  # the base was never registered here
        return {}
    versions = sorted(str(v.version) for v in found)
    return {"lmforge.base_model": f"models:/{name}/{versions[0]}"} if versions else {}


# ----------------------------------------------------------------------------- the champion


def _score_champion(cfg: Config, name: str, evaluation: ArtifactRef, chunk: ArtifactRef, progress: Progress):
    """The current champion and its scores on the challenger's sets (None when there is no
    champion). Validation blocks are token ids: a champion with another tokenizer is not scored
    on them, and the gate falls back to the metrics recorded at its registration."""
    champion = current_champion(cfg.tracking_uri, name)
    if champion is None:
        return None, None
    model = load_text_model(champion.model_uri, tracking_uri=cfg.tracking_uri)
    try:
        check_tokenizer(model, chunk.dir)
    except EvalSetError:
        return champion, None
    progress.describe(f"scoring champion v{champion.version} on the same sets")
    pairs, texts = published_pair_sets(evaluation.dir), read_text_sets(cfg.evaluate)
    prefs = published_preference_sets(evaluation.dir)
    result = evaluate_model(model, cfg.evaluate, chunk.dir, pairs, texts, progress, prefs)
    return champion, result.metrics


def _comparison(
    metrics: dict[str, float], champion_metrics: dict[str, float] | None, champion_version: str | None
) -> dict[str, Any]:
    """Rows metric | challenger | champion, for the side-by-side table."""
    rows = [{"metric": k, "challenger": v, "champion": (champion_metrics or {}).get(k)} for k, v in metrics.items()]
    return {"champion_version": champion_version, "rows": rows}
