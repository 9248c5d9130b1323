"""The register stage: an evaluated model -> a version in the MLflow model registry.

    register/<fp>/
        registration.json   name, version, model URI, aliases, decision and its reason
        comparison.json     the challenger's and the champion's scores on the same sets

Steps: log the evaluation into the model's MLflow run (metrics `eval.<name>`, the results
files); score the current champion, if any, on the very pairs and texts the challenger was
scored on; log the model as a pyfunc and register it with the champion/challenger gate.

The fingerprint (`fingerprint.py`, light: a cached run imports neither MLflow nor torch) covers
the evaluate artifact (hence the model and its data), the gate, the
registered name and the store: an unchanged run registers nothing new. A registration that was
interrupted after MLflow created the version (but before the artifact was published) is found
again by its fingerprint tag and not registered twice.
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
from lm_core.model_spec import registry_client
from lm_core.progress import NullProgress, Progress
from lm_core.registry.fingerprint import STAGE, model_name, register_key, scored_stage
from lm_core.registry.register import CHAMPION, RegistrationResult, current_champion, register_model, register_variant
from lm_core.registry.resolve import load_text_model
from lm_core.secrets import mask_url
from lm_core.stages import Inputs, StageRun, UiArtifact
from lm_core.tracking import MlflowTracker, mlflow_ui_links
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint, read_manifest, write_json_atomic

FINGERPRINT_TAG = "lmforge.register_fingerprint"
EVAL_PREFIX = "eval."  # evaluation metrics in the model's run, apart from training's own val_*
EVAL_FILES = ("metrics.json", "signatures.json", "samples.jsonl")


def register_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_register(cfg, inputs["evaluate"], ws, run.progress, run.run_tags, key=key)


def register_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """The challenger's and the champion's scores side by side, the decision, and links to MLflow's UI."""
    s = ref.stats
    rows = s.get("comparison", {}).get("rows", [])
    champion_v = s.get("comparison", {}).get("champion_version")
    table = [{**r, "champion": "" if r["champion"] is None else r["champion"]} for r in rows]
    against = f"champion v{champion_v}, scored on the same sets" if champion_v else "no champion"
    # the configured URI (the stats hold it masked), so that the run is found on a server with a password
    links = mlflow_ui_links(cfg.tracking_uri, s["mlflow_run_id"], s["name"], s["version"])
    decision = (
        f"**{s['name']} v{s['version']}**: {s['decision']} (aliases: {', '.join('@' + a for a in s['aliases'])})\n\n"
        f"{s['reason']}\n\n- model URI: `{s['model_uri']}`\n- MLflow run: `{s['mlflow_run_id']}` in "
        f"`{s['tracking_uri']}`\n- serve: `mlflow models serve -m models:/{s['name']}@champion --env-manager local`\n"
        + "".join(f"- [{text}]({url})\n" for text, url in links.items())
    )
    shown = [
        UiArtifact(
            "table",
            "register-comparison",
            table or [{"metric": "(none)", "challenger": "", "champion": ""}],
            description=f"v{s['version']} (challenger) against {against}",
        ),
        UiArtifact("markdown", "register-decision", decision),
    ]
    if "MLflow run" in links:
        text = f"MLflow run of {s['name']} v{s['version']}"
        shown.append(UiArtifact("link", "mlflow-run", links["MLflow run"], link_text=text))
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

        existing = _registered_by_fingerprint(cfg.tracking_uri, inputs["name"], fp)
        if existing is not None:
            # interrupted after MLflow registered it: the champion's scores went with that run
            result, comparison = existing, _comparison(metrics, None, None)
        else:
            champion, champion_metrics = _score_champion(cfg, inputs["name"], evaluation, chunk, progress)
            comparison = _comparison(metrics, champion_metrics, champion)
            result = register_model(
                cfg.registry,
                cfg.tracking_uri,
                run_id,
                model.dir,
                metrics,
                champion_metrics,
                tags=_lineage(model, chunk, evaluation, fp) | _base_versions(cfg, model),
                name=inputs["name"],
                champion_version=champion.version if champion else None,
            )
        int8_version = _register_int8(cfg, run_id, model, result, fp) if existing is None else None
        registration = {
            **({"int8_version": int8_version} if int8_version else {}),
            "name": result.name,
            "version": result.version,
            "model_uri": result.model_uri,
            "aliases": list(result.aliases),
            "champion": result.champion,
            "decision": result.decision,
            "reason": result.reason,
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
    run_id = model.stats.get("mlflow_run_id")
    if run_id:
        try:
            MlflowClient(cfg.tracking_uri).get_run(run_id)
            return run_id
        except MlflowException:
            pass
    tracker = MlflowTracker(
        cfg.tracking_uri,
        cfg.experiment,
        f"register-{model.fingerprint[:8]}",
        {"lmforge.stage": STAGE, f"lmforge.{model.stage}": model.fingerprint, **run_tags},
    )
    tracker.finish()
    return tracker.run_id


def _log_evaluation(tracking_uri: str, run_id: str, evaluation: ArtifactRef, metrics: dict[str, float]) -> None:
    client = MlflowClient(tracking_uri)
    stamp = int(Path(evaluation.dir / "metrics.json").stat().st_mtime * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(EVAL_PREFIX + k, float(v), stamp, 0) for k, v in metrics.items()],
        tags=[RunTag("lmforge.evaluate", evaluation.fingerprint)],
    )
    for name in EVAL_FILES:
        if (evaluation.dir / name).is_file():
            client.log_artifact(run_id, str(evaluation.dir / name), "evaluation")
    results = evaluation.stats.get("results", {}).get("markdown")
    if results:
        client.log_text(run_id, results, "evaluation/results.md")


def _lineage(model: ArtifactRef, chunk: ArtifactRef, evaluation: ArtifactRef, fp: str) -> dict[str, str]:
    chunk_inputs = read_manifest(chunk.dir)["inputs"]
    model_manifest = read_manifest(model.dir)
    return {
        f"lmforge.{model.stage}": model.fingerprint,
        "lmforge.chunk": chunk.fingerprint,
        "lmforge.tokenizer": chunk_inputs.get("tokenize", ""),
        "lmforge.config": fingerprint("config", model_manifest.get("config", {}), {}, 0),
        "lmforge.evaluate": evaluation.fingerprint,
        FINGERPRINT_TAG: fp,
        **{f"lmforge.{k}": str(v) for k, v in model_manifest.get("inputs", {}).items() if k not in ("chunk",)},
        **({"lmforge.method": str(model.stats.get("method"))} if model.stage == "finetune" else {}),
    }


def _register_int8(cfg: Config, run_id: str, model: ArtifactRef, result, fp: str) -> str | None:
    """A fine-tuned model compressed to int8 (`finetune.quantize`) becomes its own version, tagged
    `lmforge.quantized=int8` and aliased `@int8`, with its size, speed and loss change."""
    folder = model.dir / "int8"
    if not folder.is_dir():
        return None
    report = json.loads((folder / "compression.json").read_text())
    tags = {
        "lmforge.quantized": "int8",
        "lmforge.float_version": result.version,
        f"lmforge.{model.stage}": model.fingerprint,
        FINGERPRINT_TAG: f"{fp}-int8",
        **{f"int8.{k}": f"{v:.6g}" for k, v in report.items() if isinstance(v, int | float)},
    }
    description = (
        f"Dynamic int8 copy of v{result.version}: {report['size_ratio']:.2f}x smaller, generation "
        f"{report['generate_speedup']:.2f}x faster on CPU, "
        f"loss {report['float_loss']:.4f} -> {report['int8_loss']:.4f}."
    )
    return register_variant(cfg.tracking_uri, run_id, folder, result.name, "int8", tags, description)


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


def _registered_by_fingerprint(tracking_uri: str, name: str, fp: str):
    """The registration an interrupted run already made for this fingerprint, if any."""
    client = registry_client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}' and tag.`{FINGERPRINT_TAG}` = '{fp}'")
    except Exception:  # no such registered model yet
        return None
    if not versions:
        return None
    mv = max(versions, key=lambda v: int(v.version))
    aliases = tuple(sorted(mv.aliases or []))
    return RegistrationResult(
        name=name,
        version=str(mv.version),
        model_uri=f"models:/{name}/{mv.version}",
        logged_model_uri=f"models:/{mv.model_id}" if getattr(mv, "model_id", None) else "",
        aliases=aliases,
        champion=CHAMPION in aliases,
        reason=mv.tags.get("lmforge.reason", ""),
    )


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


def _comparison(metrics: dict[str, float], champion_metrics: dict[str, float] | None, champion) -> dict[str, Any]:
    """Rows metric | challenger | champion, for the side-by-side table."""
    rows = [{"metric": k, "challenger": v, "champion": (champion_metrics or {}).get(k)} for k, v in metrics.items()]
    return {"champion_version": champion.version if champion else None, "rows": rows}
