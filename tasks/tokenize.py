"""The tokenize stage as a Prefect task: clean documents -> a BPE tokenizer and token shards."""

from __future__ import annotations

from prefect import task

from lm_core.config import TokenizeConfig
from lm_core.tokenize import run_tokenize, tokenize_fingerprint
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
    name="tokenize",
    cache_key_fn=stage_cache_key_fn("tokenize", lambda p: tokenize_fingerprint(p["cfg"], p["clean"])),
    **STAGE_TASK,
)
def tokenize_task(cfg: TokenizeConfig, clean: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    with StageProgress("tokenize") as progress:
        ref = run_tokenize(
            cfg,
            clean,
            workspace_for(workspace, "tokenize", force),
            map_shards=prefect_map("tokenize"),
            progress=progress,
        )
    publish_stats(ref)
    return ref


def tokenize(cfg: TokenizeConfig, clean: ArtifactRef, workspace: str, force: bool = False) -> ArtifactRef:
    fp = tokenize_fingerprint(cfg, clean)
    return run_stage_task(tokenize_task, "tokenize", fp, force, cfg=cfg, clean=clean, workspace=workspace)
