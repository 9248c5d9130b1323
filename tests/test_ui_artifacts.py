"""What a stage shows in the Prefect UI: a progress artifact for a stage that runs a while, none
for one that is over in a moment (its stats table says it is done); and its tables, markdown and
links, sent from a thread of their own, all in the API when the flow returns. Cells escaped for the
UI's Markdown, per-model keys, links to MLflow only where a UI shows the store, none to the
embedded API (tests/test_ui_browser.py looks at all of it in a real browser)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

import tasks.common
from flows.common import STAGE_FLOW
from lm_core.config import load_config
from lm_core.evaluate.stage import evaluate_ui
from lm_core.mlflow_ui import MLFLOW_UI_ENV, same_store
from lm_core.registry.stage import register_ui
from lm_core.ui_text import md_escape
from lm_core.workspace import Workspace
from tasks.common import StageProgress
from tasks.ui_artifacts import readable_table, send_schedule_hint, send_ui_artifact

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


# ----------------------------------------------------------------------------- what the UI shows


def test_table_cells_are_escaped_for_the_uis_markdown_numbers_rounded_columns_kept_in_order():
    rows = [
        {"set": "chat", "prompt": "What does `__init__` do?", "generation": "a *b* <|end|>", "loss": 6.617913246154785}
    ]
    (row,) = readable_table(rows)
    assert list(row) == ["set", "prompt", "generation", "loss"]
    assert row["prompt"] == r"What does \`\_\_init\_\_\` do?" and row["generation"] == r"a \*b\* \<\|end\|\>"
    assert row["loss"] == 6.618 and readable_table([{"n": 123456.789, "k": 7}]) == [{"n": 123457, "k": 7}]
    assert md_escape("two\n\nparagraphs  and   spaces") == "two paragraphs and spaces"  # one line


def published(ws, stage: str, fp: str, inputs: dict, stats: dict, files: dict[str, str] | None = None):
    with ws.build(stage, fp, config={}, inputs=inputs) as b:
        for name, text in (files or {}).items():
            (b.dir / name).write_text(text)
        b.stats = stats
    return b.ref


def test_an_evaluation_is_shown_per_model_its_chats_first_generations_cut_at_the_end_token(tmp_path):
    cfg = load_config(None, [f"workspace={tmp_path / 'ws'}", "evaluate.table_rows=4"])
    samples = [{"set": "heldout", "prompt": f"text {i}", "generation": "more", "reference": "ref"} for i in range(5)]
    samples += [{"set": "chat", "prompt": "Hi?", "generation": "Hello.<|end|><|end|><|end|>", "reference": "Hi."}] * 3
    metrics = [{"metric": "val_loss", "value": "6.6179"}, {"metric": "bleu.chat", "value": "0.0847"}]
    ref = published(
        Workspace(cfg.workspace),
        "evaluate",
        "e" * 16,
        {"finetune": "f" * 16, "chunk": "c" * 16},
        {"results": {"metrics": metrics}},
        {"samples.jsonl": "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples)},
    )
    shown = {a.key: a for a in evaluate_ui(cfg, ref)}
    assert set(shown) == {"evaluate-metrics-chat", "evaluate-samples-chat", "evaluate-results-chat"}
    table = shown["evaluate-samples-chat"].data
    assert [list(r) for r in table] == [["set", "prompt", "generation", "reference"]] * 4  # reading order
    assert [r["set"] for r in table] == ["chat", "chat", "heldout", "heldout"]  # each set, the chats first
    assert table[0]["generation"] == "Hello."
    assert "Hello." in shown["evaluate-results-chat"].data and "<|end|>" not in shown["evaluate-results-chat"].data


def test_links_to_mlflow_are_made_only_where_a_ui_shows_the_store(tmp_path, monkeypatch):
    cfg = load_config(None, [f"workspace={tmp_path / 'ws'}"])
    client = MlflowClient(cfg.tracking_uri)
    run = client.create_run(client.create_experiment("links"))
    stats = {
        "name": "demo-chat", "version": "2", "decision": "challenger", "aliases": ["challenger"],
        "reason": "val_bpb 3.6 > champion's 3.5: kept as challenger", "model_uri": "models:/demo-chat/2",
        "mlflow_run_id": run.info.run_id, "tracking_uri": cfg.tracking_uri,
        "comparison": {"champion_version": "1", "rows": [{"metric": "val_bpb", "champion": 3.5, "challenger": 3.6}]},
    }  # fmt: skip
    ref = published(Workspace(cfg.workspace), "register", "r" * 16, {"finetune": "f" * 16, "chunk": "c" * 16}, stats)

    def keys() -> dict:
        return {a.key: a for a in register_ui(cfg, ref)}

    monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
    shown = keys()  # a SQLite store with no server on it: nothing to link to
    assert set(shown) == {"register-comparison-chat", "register-decision-chat"}
    assert "](" not in shown["register-decision-chat"].data
    assert [list(r) for r in shown["register-comparison-chat"].data] == [["metric", "challenger", "champion"]]

    ui = "http://127.0.0.1:5999"  # `lmforge server`'s MLflow UI on this store, as its command learned it
    monkeypatch.setenv(MLFLOW_UI_ENV, f'{{"store": "{cfg.tracking_uri}", "url": "{ui}"}}')
    shown = keys()
    experiment = run.info.experiment_id
    assert shown["register-mlflow-run-chat"].data == (
        f"{ui}/#/experiments/{experiment}/runs/{run.info.run_id}?workflowType=machine_learning"
    )
    assert (
        shown["register-mlflow-version-chat"].data
        == f"{ui}/#/models/demo-chat/versions/2?workflowType=machine_learning"
    )
    assert f"[MLflow experiment]({ui}/#/experiments/{experiment}/runs?" in shown["register-decision-chat"].data

    monkeypatch.setenv(MLFLOW_UI_ENV, f'{{"store": "sqlite:///{tmp_path}/other.db", "url": "{ui}"}}')
    assert "register-mlflow-run-chat" not in keys()  # that server shows another store
    assert same_store(f"sqlite:///{tmp_path}/ws/../ws/mlflow.db", cfg.tracking_uri)
    assert same_store("postgresql://me:***@db/mlflow", "postgresql://me@db/mlflow")  # as announced: masked


@flow(**STAGE_FLOW)
def a_hand_started_flow(nested: bool) -> str:
    send_schedule_hint()
    if nested:
        a_hand_started_flow(False)
    return "done"


def test_a_flow_run_started_by_hand_says_how_flows_get_deployments_once_not_in_its_subflows():
    top_id = a_hand_started_flow(True, return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        top = client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [top_id]}))
        sub = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [top_id]}))
        nested = client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [r.id for r in sub]}))
    (hint,) = [a for a in top if a.type == "markdown"]
    assert hint.key is None and "lmforge serve" in hint.data and "lmforge deploy" in hint.data
    assert not [a for a in nested if a.type == "markdown"]


NO_DEAD_LINKS = """
import sys
from pathlib import Path
from prefect import flow
from lmforge.embedded import EmbeddedServer
from tasks.common import prefect_run_tags
from tasks.stage_task import with_prefect_link

@flow(name="no-ui-to-link-to")
def tags() -> dict:
    return with_prefect_link(prefect_run_tags())

s = EmbeddedServer(Path(sys.argv[1]))
s.wait()
with s.settings():
    print(sorted(tags()), flush=True)
s.stop()
"""


def test_the_embedded_api_has_no_ui_so_nothing_links_to_it(tmp_path):
    """It is gone once its command ends: no "View at" line in the terminal, no link from MLflow."""

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_LOGGING_LEVEL"] = "INFO"  # Prefect's "View at" line is an INFO line
    out = subprocess.run(
        [sys.executable, "-c", NO_DEAD_LINKS, str(tmp_path / ".prefect")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "Beginning flow run" in out.stdout + out.stderr and "View at" not in out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['prefect.flow_run_id', 'prefect.flow_run_name']"
