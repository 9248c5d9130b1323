"""The chunk stage as a Prefect task: token shards -> fixed train/validation blocks for training."""

from __future__ import annotations

from prefect import task

from lm_core.chunk import chunk_fingerprint, run_chunk
from lm_core.config import ChunkConfig, EvaluateConfig
from lm_core.workspace import ArtifactRef
from tasks.common import STAGE_TASK, StageProgress, publish_stats, run_stage_task, stage_cache_key_fn, workspace_for


@task(
    name="chunk",
    cache_key_fn=stage_cache_key_fn("chunk", lambda p: chunk_fingerprint(p["cfg"], p["tokens"], p["evaluation"])),
    **STAGE_TASK,
)
def chunk_task(
    cfg: ChunkConfig, tokens: ArtifactRef, workspace: str, evaluation: EvaluateConfig | None, force: bool = False
) -> ArtifactRef:
    with StageProgress("chunk") as progress:
        ref = run_chunk(cfg, tokens, workspace_for(workspace, "chunk", force), progress=progress, evaluation=evaluation)
    publish_stats(ref)
    return ref


def chunk(
    cfg: ChunkConfig, tokens: ArtifactRef, workspace: str, force: bool = False, evaluation: EvaluateConfig | None = None
) -> ArtifactRef:
    """`evaluation`: the evaluation sets (besides the validation documents) that training is
    decontaminated against: the run's `evaluate` section."""
    fp = chunk_fingerprint(cfg, tokens, evaluation)
    return run_stage_task(
        chunk_task, "chunk", fp, force, cfg=cfg, tokens=tokens, workspace=workspace, evaluation=evaluation
    )
