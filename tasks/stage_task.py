"""Every stage as a Prefect task, made from its declaration (lm_core/stages.py).

The workspace is the one cache. `run_stage` computes a run's key once (the artifact's
fingerprint, and what its manifest records) and hands it to the task, whose Prefect cache key
*is* that fingerprint (plus the workspace): Prefect shows a stage as Cached exactly when its
artifact is published. When it is not (a workspace cleaned by hand) or `force` is asked, the
task runs with its cache entry refreshed, and builds with the same key.
"""

from __future__ import annotations

import functools
import hashlib
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.tasks import exponential_backoff
from prefect.utilities.urls import url_for

from lm_core.config import Config
from lm_core.stages import STAGE, Inputs, Stage, StageRun, build, complete_inputs, stage_key
from lm_core.workspace import ArtifactRef, StageKey, Workspace
from tasks.common import (
    STAGE_TASK,
    StageProgress,
    prefect_map,
    prefect_run_tags,
    publish_stats,
    report_stage,
    training_slot,
    with_training_timeout,
    workspace_for,
)
from tasks.ui_artifacts import readable_table, send_ui_artifact


def run_stage(
    name: str, config: Config, inputs: Inputs | None = None, force: bool = False, refresh: bool = False
) -> ArtifactRef:
    """Stage `name` on `inputs` (its first input at least; the others are found upstream of it)
    as a task of the calling flow. `refresh`: a refreshable stage (the crawl) fetches a new snapshot."""
    stage = STAGE[name]
    ws = Workspace(config.workspace)
    inputs = complete_inputs(stage, inputs or {}, ws)
    key = stage_key(stage, config, inputs, ws, snapshot=refresh_label() if refresh and stage.refreshable else None)
    a_task = stage_task(name).with_options(refresh_cache=force or not ws.is_published(name, key.fingerprint))
    if stage.trains:
        a_task = with_training_timeout(a_task, config.schedules.training_timeout_h)
    started = time.monotonic()
    ref = a_task(config=config, inputs=inputs, key=key, force=force)
    report_stage(ref, started)  # its one line: built or cached, key figures, time
    return ref


def cache_key(stage: str, workspace: str, fp: str) -> str:
    ws_tag = hashlib.sha256(str(Workspace(workspace).root).encode()).hexdigest()[:8]
    return f"lmforge-{stage}-{fp}-{ws_tag}"


def _cache_key(_: TaskRunContext, params: dict[str, Any]) -> str:
    key: StageKey = params["key"]
    return cache_key(key.stage, str(params["config"].workspace), key.fingerprint)


def _worth_retrying(task, task_run, state) -> bool:
    """Not bad input (a source that cannot be read, a crawl that kept no document): the same
    config would fail the same way seconds later, and the message already names the fix."""
    return not isinstance(state.result(raise_on_failure=False), ValueError)


@functools.cache
def stage_task(name: str) -> Task:
    """The Prefect task of stage `name`: builds its artifact, then shows it in the UI."""
    stage = STAGE[name]
    options: dict[str, Any] = dict(name=name, cache_key_fn=_cache_key, **STAGE_TASK)
    if stage.retries:  # 10 s, 20 s, 40 s later, +/-50 %; a stage that resumes redoes only what was lost
        options |= dict(
            retries=stage.retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=10),
            retry_jitter_factor=0.5,
            retry_condition_fn=_worth_retrying,
        )

    def build_artifact(config: Config, inputs: dict[str, ArtifactRef], key: StageKey, force: bool = False):
        ws = workspace_for(str(config.workspace), name, force)
        with training_slot() if stage.trains else nullcontext(), StageProgress(name, key.inputs) as progress:
            tags = with_prefect_link(prefect_run_tags())
            run = StageRun(progress=progress, map_shards=prefect_map(name), run_tags=tags)
            ref = build(stage, config, inputs, ws, key, run)
        publish(stage, config, ref)
        return ref

    build_artifact.__name__ = build_artifact.__qualname__ = f"{name}_task"
    return task(**options)(build_artifact)


def with_prefect_link(tags: dict[str, str]) -> dict[str, str]:
    """An MLflow run's tags naming its Prefect flow run, plus a link to the run's page when a
    Prefect UI shows it (a server's; the embedded API has none): as a tag, and as the run's
    description, which MLflow's UI shows as Markdown, the link clickable."""
    run_id = tags.get("prefect.flow_run_id")
    url = url_for("flow-run", obj_id=run_id) if run_id else None
    if not url:
        return tags
    note = f"Made by the Prefect flow run [{tags.get('prefect.flow_run_name') or run_id}]({url})."
    return tags | {"prefect.flow_run_url": url, "mlflow.note.content": note}


_CREATE = {"table": create_table_artifact, "markdown": create_markdown_artifact, "link": create_link_artifact}


def publish(stage: Stage, config: Config, ref: ArtifactRef) -> None:
    """The stage's stats table (and breakdowns), then what its `ui` function shows."""
    if stage.stats_table:
        publish_stats(ref, stage.breakdowns)
    for shown in stage.function("ui")(config, ref) if stage.ui else []:
        extra = {"link_text": shown.link_text} if shown.kind == "link" else {}
        data = readable_table(shown.data) if shown.kind == "table" else shown.data
        send_ui_artifact(_CREATE[shown.kind], data, key=shown.key, description=shown.description, **extra)


def refresh_label() -> str:
    """A refresh's snapshot label: its flow run's scheduled start (UTC), so that a retried run
    resumes its own crawl, and each night's scheduled run makes a new one. To the microsecond:
    two refreshes started by hand within one second are two snapshots."""
    ctx = FlowRunContext.get()
    when = ctx.flow_run.expected_start_time if ctx is not None and ctx.flow_run is not None else None
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
