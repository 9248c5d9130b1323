"""The evaluate stage as a Prefect task: a model artifact -> its perplexity, bits-per-byte,
BLEU and chrF, with a metrics table and a samples table in the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lm_core.config import EvaluateConfig
from lm_core.evaluate.fingerprint import evaluate_fingerprint
from lm_core.workspace import ArtifactRef
from tasks.common import STAGE_TASK, StageProgress, run_stage_task, stage_cache_key_fn, workspace_for
from tasks.ui_artifacts import send_ui_artifact


@task(
    name="evaluate",
    cache_key_fn=stage_cache_key_fn("evaluate", lambda p: evaluate_fingerprint(p["cfg"], p["model"], p["chunk"])),
    **STAGE_TASK,
)
def evaluate_task(
    cfg: EvaluateConfig, model: ArtifactRef, chunk: ArtifactRef, workspace: str, force: bool = False
) -> ArtifactRef:
    from lm_core.evaluate.stage import run_evaluate  # torch: only when there is scoring to do

    with StageProgress("evaluate") as progress:
        ref = run_evaluate(cfg, model, chunk, workspace_for(workspace, "evaluate", force), progress=progress)
    results = ref.stats.get("results", {})
    send_ui_artifact(
        create_table_artifact,
        results.get("metrics") or [{"metric": "(none)", "value": ""}],
        key="evaluate-metrics",
        description=f"evaluate `{ref.fingerprint}` of {model.stage} `{model.fingerprint}`",
    )
    if results.get("samples"):
        send_ui_artifact(
            create_table_artifact,
            results["samples"],
            key="evaluate-samples",
            description="prompt, generation, reference",
        )
    send_ui_artifact(
        create_markdown_artifact,
        f"**evaluate** `{ref.fingerprint}` of {model.stage} `{model.fingerprint}`\n\n" + results.get("markdown", ""),
        key="evaluate-results",
    )
    return ref


def evaluate(
    cfg: EvaluateConfig, model: ArtifactRef, chunk: ArtifactRef, workspace: str, force: bool = False
) -> ArtifactRef:
    fp = evaluate_fingerprint(cfg, model, chunk)
    return run_stage_task(evaluate_task, "evaluate", fp, force, cfg=cfg, model=model, chunk=chunk, workspace=workspace)
