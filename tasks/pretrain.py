"""The pretrain stage as a Prefect task: chunk artifact -> trained weights, tracked in MLflow."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lm_core.config import Config, mask_url
from lm_core.train.fingerprint import pretrain_fingerprint
from lm_core.workspace import ArtifactRef
from tasks.common import (
    STAGE_TASK,
    StageProgress,
    prefect_run_tags,
    publish_stats,
    run_stage_task,
    stage_cache_key_fn,
    training_slot,
    with_training_timeout,
    workspace_for,
)
from tasks.ui_artifacts import send_ui_artifact


@task(
    name="pretrain",
    cache_key_fn=stage_cache_key_fn("pretrain", lambda p: pretrain_fingerprint(p["cfg"], p["chunk"])),
    **STAGE_TASK,
)
def pretrain_task(cfg: Config, chunk: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    from lm_core.train.stage import run_pretrain  # torch and MLflow: only when there is training to do

    tags = prefect_run_tags()
    with training_slot(), StageProgress("pretrain") as progress:
        ref = run_pretrain(cfg, chunk, workspace_for(workspace, "pretrain", force), progress=progress, run_tags=tags)
    publish_stats(ref)
    run_id = ref.stats.get("mlflow_run_id", "")
    send_ui_artifact(
        create_markdown_artifact,
        f"**pretrain** `{ref.fingerprint}`\n\n- weights: `{ref.path}/model.safetensors`\n"
        f"- MLflow run: `{run_id}` in `{mask_url(cfg.tracking_uri)}`\n"
        f"- validation: loss {ref.stats.get('val_loss', float('nan')):.4f}, "
        f"bits/byte {ref.stats.get('val_bpb', float('nan')):.4f}\n",
        key="pretrain-summary",
    )
    return ref


def pretrain(cfg: Config, chunk: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    fp = pretrain_fingerprint(cfg, chunk)
    stage_task = with_training_timeout(pretrain_task, cfg.schedules.training_timeout_h)
    return run_stage_task(stage_task, "pretrain", fp, force, cfg=cfg, chunk=chunk, workspace=workspace)
