"""What a stage shows in the Prefect UI: a progress artifact for a stage that runs a while, none
for one that is over in a moment (its stats table says it is done); and its tables, markdown and
links, sent from a thread of their own, all in the API when the flow returns."""

from __future__ import annotations

import logging
import time

import pytest
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

import tasks.common
from flows.common import STAGE_FLOW
from tasks.common import StageProgress
from tasks.ui_artifacts import send_ui_artifact

pytestmark = pytest.mark.prefect


@task
def a_stage(stage: str, steps: int) -> None:
    with StageProgress(stage) as progress:
        progress.start(steps, "steps")
        for _ in range(steps):
            progress.advance()


@flow
def a_flow(stage: str, steps: int) -> None:
    a_stage(stage, steps)


def progress_artifacts(stage: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{stage}-progress"])))


def test_a_short_stage_gets_no_progress_artifact():
    a_flow("quick", 5)
    assert progress_artifacts("quick") == []


def test_a_long_stage_shows_its_progress_and_ends_at_100_percent(monkeypatch):
    monkeypatch.setattr(tasks.common, "PROGRESS_ARTIFACT_AFTER_S", 0.0)  # every stage counts as long
    a_flow("long", 5)
    (artifact,) = progress_artifacts("long")
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.flow_run_id is not None and artifact.task_run_id is not None  # linked to the run


def artifacts(key: str, latest: bool = False) -> list:
    with get_client(sync_client=True) as client:
        keyed = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        if latest:
            return client.read_latest_artifacts(artifact_filter=keyed)
        return client.read_artifacts(artifact_filter=keyed)


def a_slow_table(table, key, description):
    time.sleep(0.5)  # an API that answers slowly: the stage does not wait for it
    return create_table_artifact(table, key=key, description=description)


@task
def a_publishing_stage(key: str, versions: int) -> float:
    t0 = time.monotonic()
    for v in range(versions):
        send_ui_artifact(a_slow_table, [{"version": v}], key=key, description=f"version {v}")
    send_ui_artifact(create_markdown_artifact, f"**{versions} versions**", key=f"{key}-summary")
    return time.monotonic() - t0


@flow(**STAGE_FLOW)
def a_publishing_flow(key: str, versions: int, fail: bool = False) -> float:
    took = a_publishing_stage(key, versions)
    if fail:
        raise RuntimeError("a later stage failed")
    return took


def test_a_flows_ui_artifacts_are_all_in_the_api_when_it_returns_in_order_and_filed_under_their_task_run():
    took = a_publishing_flow("published", 4)
    assert took < 0.5  # handed over, not waited for
    versions = artifacts("published")
    assert sorted(a.description for a in versions) == [f"version {v}" for v in range(4)]
    assert all(a.flow_run_id is not None and a.task_run_id is not None for a in versions)
    assert len({a.task_run_id for a in versions}) == 1  # the stage's own run, carried to the sending thread
    (latest,) = artifacts("published", latest=True)
    assert latest.description == "version 3"  # sent in the order handed over
    (summary,) = artifacts("published-summary")
    assert summary.type == "markdown" and summary.data == "**4 versions**"


def test_a_failed_flow_still_publishes_what_its_finished_stages_handed_over():
    with pytest.raises(RuntimeError, match="a later stage failed"):
        a_publishing_flow("before-failure", 2, fail=True)
    assert len(artifacts("before-failure")) == 2


def failing_create(*args, **kwargs):
    raise ConnectionError("the API is gone")


@flow(**STAGE_FLOW)
def a_flow_whose_artifact_cannot_be_sent() -> str:
    send_ui_artifact(failing_create, [{"a": 1}], key="lost")
    send_ui_artifact(create_markdown_artifact, "still sent", key="after-the-lost-one")
    return "done"


def test_an_artifact_that_cannot_be_sent_is_logged_and_the_run_goes_on(caplog):
    with caplog.at_level(logging.WARNING, logger="lmforge.ui_artifacts"):
        assert a_flow_whose_artifact_cannot_be_sent() == "done"
    assert "could not send the UI artifact 'lost'" in caplog.text and "the API is gone" in caplog.text
    assert [a.data for a in artifacts("after-the-lost-one")] == ["still sent"]
