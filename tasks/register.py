"""The register stage as a Prefect task: an evaluated model -> a version in the MLflow model
registry, champion or challenger, with the decision and the scores side by side in the UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from lm_core.config import Config
from lm_core.registry.stage import register_fingerprint
from lm_core.workspace import ArtifactRef
from tasks.common import (
    STAGE_TASK,
    StageProgress,
    mlflow_ui_links,
    prefect_run_tags,
    run_stage_task,
    stage_cache_key_fn,
    workspace_for,
)
from tasks.ui_artifacts import send_ui_artifact


@task(
    name="register",
    cache_key_fn=stage_cache_key_fn("register", lambda p: register_fingerprint(p["cfg"], p["evaluation"])),
    **STAGE_TASK,
)
def register_task(cfg: Config, evaluation: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    from lm_core.registry.stage import run_register  # MLflow and torch: only when registering

    tags = prefect_run_tags()
    with StageProgress("register") as progress:
        ref = run_register(cfg, evaluation, workspace_for(workspace, "register", force), progress, run_tags=tags)
    s = ref.stats
    rows = s.get("comparison", {}).get("rows", [])
    champion_v = s.get("comparison", {}).get("champion_version")
    send_ui_artifact(
        create_table_artifact,
        [{**r, "champion": "" if r["champion"] is None else r["champion"]} for r in rows]
        or [{"metric": "(none)", "challenger": "", "champion": ""}],
        key="register-comparison",
        description=f"v{s['version']} (challenger) against "
        + (f"champion v{champion_v}, scored on the same sets" if champion_v else "no champion"),
    )
    # the configured URI (the stats hold it masked), so that the run is found on a server with a password
    links = mlflow_ui_links(cfg.tracking_uri, s["mlflow_run_id"], s["name"], s["version"])
    send_ui_artifact(
        create_markdown_artifact,
        f"**{s['name']} v{s['version']}**: {s['decision']} (aliases: {', '.join('@' + a for a in s['aliases'])})\n\n"
        f"{s['reason']}\n\n- model URI: `{s['model_uri']}`\n- MLflow run: `{s['mlflow_run_id']}` in "
        f"`{s['tracking_uri']}`\n- serve: `mlflow models serve -m models:/{s['name']}@champion --env-manager local`\n"
        + "".join(f"- [{text}]({url})\n" for text, url in links.items()),
        key="register-decision",
    )
    if "MLflow run" in links:
        send_ui_artifact(
            create_link_artifact,
            links["MLflow run"],
            link_text=f"MLflow run of {s['name']} v{s['version']}",
            key="mlflow-run",
        )
    return ref


def register(cfg: Config, evaluation: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    fp = register_fingerprint(cfg, evaluation)
    return run_stage_task(register_task, "register", fp, force, cfg=cfg, evaluation=evaluation, workspace=workspace)
