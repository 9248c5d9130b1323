"""What a stage shows in the Prefect UI while it runs: a progress artifact for a stage that runs a
while, none for one that is over in a moment (its stats table says it is done)."""

from __future__ import annotations

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

import tasks.common
from tasks.common import StageProgress

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
