"""The crawl stage as a Prefect task: sources -> raw document shards (+ every refused fetch)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.context import FlowRunContext
from prefect.tasks import exponential_backoff

from lm_core.config import CrawlConfig
from lm_core.crawl import CrawlInputError, crawl_fingerprint, current_snapshot, run_crawl
from lm_core.workspace import ArtifactRef, Workspace
from tasks.common import STAGE_TASK, StageProgress, publish_stats, run_stage_task, stage_cache_key_fn, workspace_for


def _worth_retrying(task, task_run, state) -> bool:
    """Not a source that cannot be read nor a crawl that kept no document (its pages were each
    retried already): the same config would fail the same way seconds later, and the message
    already names the fix."""
    return not isinstance(state.result(raise_on_failure=False), CrawlInputError)


# The crawl is the one network-bound stage. Single fetches already retry with backoff inside
# `lm_core.crawl`; these task retries cover a crawl that dies as a whole (the network or a site
# down): 10 s, 20 s, 40 s later, +/-50 %. A crawl that dies part-way resumes from its frontier,
# so a retry only redoes what was lost.
@task(
    name="crawl",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_worth_retrying,
    cache_key_fn=stage_cache_key_fn("crawl", lambda p: crawl_fingerprint(p["cfg"], p["snapshot"])),
    **STAGE_TASK,
)
def crawl_task(cfg: CrawlConfig, workspace: str, snapshot: str = "", force: bool = False) -> ArtifactRef:
    with StageProgress("crawl") as progress:
        ref = run_crawl(cfg, workspace_for(workspace, "crawl", force), progress=progress, snapshot=snapshot)
    publish_stats(ref, breakdowns=["documents_by_source", "failures_by_reason"])
    return ref


def crawl(cfg: CrawlConfig, workspace: str, force: bool = False, refresh: bool = False) -> ArtifactRef:
    """The newest crawl of `cfg` (crawled once if there is none), or with `refresh` a new one."""
    snapshot = refresh_label() if refresh else current_snapshot(cfg, Workspace(workspace))
    fp = crawl_fingerprint(cfg, snapshot)
    return run_stage_task(crawl_task, "crawl", fp, force, cfg=cfg, workspace=workspace, snapshot=snapshot)


def refresh_label() -> str:
    """A refresh's snapshot label: its flow run's scheduled start (UTC), so that a retried run
    resumes its own crawl, and each night's scheduled run makes a new one. To the microsecond:
    two refreshes started by hand within one second are two snapshots."""
    ctx = FlowRunContext.get()
    when = ctx.flow_run.expected_start_time if ctx is not None and ctx.flow_run is not None else None
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
