"""The crawl stage as a Prefect task: sources -> raw document shards (+ every refused fetch)."""

from __future__ import annotations

from prefect import task
from prefect.tasks import exponential_backoff

from lm_core.config import CrawlConfig
from lm_core.crawl import crawl_fingerprint, run_crawl
from lm_core.workspace import ArtifactRef
from tasks.common import STAGE_TASK, StageProgress, publish_stats, run_stage_task, stage_cache_key_fn, workspace_for


# The crawl is the one network-bound stage. Single fetches already retry with backoff inside
# `lm_core.crawl`; these task retries cover a crawl that dies as a whole (the network or a site
# down): 10 s, 20 s, 40 s later, +/-50 %. A crawl that dies part-way resumes from its frontier,
# so a retry only redoes what was lost.
@task(
    name="crawl",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    cache_key_fn=stage_cache_key_fn("crawl", lambda p: crawl_fingerprint(p["cfg"])),
    **STAGE_TASK,
)
def crawl_task(cfg: CrawlConfig, workspace: str, force: bool = False) -> ArtifactRef:
    with StageProgress("crawl") as progress:
        ref = run_crawl(cfg, workspace_for(workspace, "crawl", force), progress=progress)
    publish_stats(ref, breakdowns=["documents_by_source", "failures_by_reason"])
    return ref


def crawl(cfg: CrawlConfig, workspace: str, force: bool = False) -> ArtifactRef:
    return run_stage_task(crawl_task, "crawl", crawl_fingerprint(cfg), force, cfg=cfg, workspace=workspace)
