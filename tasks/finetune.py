"""The finetune stage as a Prefect task: a pretrained model -> a chat model, tracked in MLflow."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lm_core.config import Config
from lm_core.finetune.stage import finetune_fingerprint
from lm_core.workspace import ArtifactRef, Workspace
from tasks.common import (
    STAGE_TASK,
    StageProgress,
    prefect_run_tags,
    publish_stats,
    run_stage_task,
    training_slot,
    with_training_timeout,
    workspace_for,
)
from tasks.ui_artifacts import send_ui_artifact


def _key(_, p) -> str:
    from tasks.common import cache_key

    return cache_key("finetune", p["workspace"], finetune_fingerprint(p["cfg"], p["base"], Workspace(p["workspace"])))


@task(name="finetune", cache_key_fn=_key, **STAGE_TASK)
def finetune_task(cfg: Config, base: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    from lm_core.finetune.stage import run_finetune  # torch and MLflow: only when there is training to do

    with training_slot(), StageProgress("finetune") as progress:
        ref = run_finetune(
            cfg, base, workspace_for(workspace, "finetune", force), progress, run_tags=prefect_run_tags()
        )
    publish_stats(ref)
    s = ref.stats
    shown = ", ".join(f"{k} {v:.4g}" for k, v in s.items() if k.startswith(("heldout_", "initial_heldout_")))
    send_ui_artifact(
        create_markdown_artifact,
        f"**finetune** ({s.get('method')}) `{ref.fingerprint}` from {s.get('base')}\n\n"
        f"- {s.get('train_examples')} training examples ({s.get('source')}), {s.get('heldout_examples')} held out\n"
        f"- {s.get('steps')} steps; held-out: {shown}\n- MLflow run: `{s.get('mlflow_run_id')}`\n",
        key="finetune-summary",
    )
    return ref


def finetune(cfg: Config, base: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    fp = finetune_fingerprint(cfg, base, Workspace(workspace))
    stage_task = with_training_timeout(finetune_task, cfg.schedules.training_timeout_h)
    return run_stage_task(stage_task, "finetune", fp, force, cfg=cfg, base=base, workspace=workspace)
