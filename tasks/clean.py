"""The clean stage as a Prefect task: raw documents -> main text, filtered, scrubbed, deduplicated."""

from __future__ import annotations

from prefect import task

from lm_core.clean.fingerprint import clean_fingerprint
from lm_core.config import CleanConfig
from lm_core.workspace import ArtifactRef
from tasks.common import (
    STAGE_TASK,
    StageProgress,
    prefect_map,
    publish_stats,
    run_stage_task,
    stage_cache_key_fn,
    workspace_for,
)


@task(
    name="clean",
    cache_key_fn=stage_cache_key_fn("clean", lambda p: clean_fingerprint(p["cfg"], p["crawl"])),
    **STAGE_TASK,
)
def clean_task(cfg: CleanConfig, crawl: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    from lm_core.clean.stage import run_clean  # trafilatura, datasketch: only when there is cleaning to do

    with StageProgress("clean") as progress:
        ref = run_clean(
            cfg, crawl, workspace_for(workspace, "clean", force), map_shards=prefect_map("clean"), progress=progress
        )
    publish_stats(ref, breakdowns=["rejected_by_reason", "pii_replacements"])
    return ref


def clean(cfg: CleanConfig, crawl: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    fp = clean_fingerprint(cfg, crawl)
    return run_stage_task(clean_task, "clean", fp, force, cfg=cfg, crawl=crawl, workspace=workspace)
