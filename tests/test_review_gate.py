"""The human review gate (`registry.human_review`): a register flow whose challenger the automatic
gate would make champion pauses (Paused in Prefect's API) with a review round, and resumes when
the round's votes decide, or when a person decides through the API (what the UI's Resume form
sends), or when its timeout passes; the decision and its evidence land on the model version and
the challenger's MLflow run. Real embedded Prefect API, SQLite MLflow store, tiny models."""

from __future__ import annotations

import json
import threading
import time

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from typer.testing import CliRunner

from flows.stages import STAGE_FLOWS
from lm_core.config import Config, RegistryConfig
from lm_core.evaluate.stage import run_evaluate
from lm_core.registry.fingerprint import register_fingerprint
from lm_core.registry.promote import apply_review
from lm_core.registry.stage import run_register
from lm_core.review.round import ReviewError, Round, rounds
from lm_core.review.votes import parse_vote
from lm_core.train.stage import run_pretrain
from lmforge.cli import app
from tests.helpers import pretrained_workspace

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry", "optimizer", "checkpoint"]
EVALUATE = ["evaluate.heldout_pairs=4", "evaluate.prompt_tokens=12", "evaluate.reference_tokens=8"]
EVALUATE += ["evaluate.val_batches=2", "evaluate.generation.max_new_tokens=8"]
REVIEW = ["review.prompts=4", "review.max_new_tokens=8", "review.min_votes=2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A weak (2 steps) and a stronger (24 steps) tiny model on the same data, each evaluated:
    the automatic gate prefers the stronger."""
    root = tmp_path_factory.mktemp("gate")
    cfg, ws, chunk, weak = pretrained_workspace(
        root, TOPICS, 24, "pretrain.max_steps=2", "pretrain.eval_every=2", "pretrain.lr=0.01", *EVALUATE, *REVIEW
    )
    strong_cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"max_steps": 24})})
    strong = run_pretrain(strong_cfg, chunk, ws)
    weak_eval, strong_eval = (run_evaluate(cfg.evaluate, m, chunk, ws) for m in (weak, strong))
    assert strong_eval.stats["val_bpb"] < weak_eval.stats["val_bpb"]
    with get_client(sync_client=True) as client:  # the embedded API started here, not by two threads at once
        client.hello()
    return cfg, ws, weak_eval, strong_eval, strong


def gated(cfg: Config, name: str, **registry) -> Config:
    reg = cfg.registry.model_copy(update={"model_name": name, "human_review": True, **registry})
    return cfg.model_copy(update={"registry": reg})


def start_register_flow(cfg: Config, evaluation) -> tuple[threading.Thread, dict]:
    """The register stage's own flow on a thread (it blocks while paused); its result lands in the dict."""
    out: dict = {}

    def run():
        try:
            out["ref"] = STAGE_FLOWS["register"](config=cfg, evaluation=evaluation.fingerprint)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def paused_run(thread: threading.Thread, out: dict, timeout: float = 240):
    """The register flow run once the API has it Paused."""
    deadline = time.monotonic() + timeout
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    while time.monotonic() < deadline:
        assert thread.is_alive(), f"the flow ended without pausing: {out}"
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(flow_run_filter=paused)
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.5)
    raise AssertionError("the register flow never paused")


def finished(thread: threading.Thread, out: dict, run_id, timeout: float = 240):
    thread.join(timeout)
    assert not thread.is_alive(), "the flow did not resume"
    assert "error" not in out, repr(out.get("error"))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert run.state.type == StateType.COMPLETED, run.state
    return out["ref"], {a.key: a for a in artifacts if a.key}


def register_weak_champion(cfg: Config, ws, weak_eval, name: str) -> None:
    """The first version of `name`: champion, without review (nothing to compare it with)."""
    ref = run_register(gated(cfg, name), weak_eval, ws)
    reg = json.loads((ref.dir / "registration.json").read_text())
    assert (reg["version"], reg["champion"]) == ("1", True) and "awaiting_review" not in reg


def open_round_of(ws, strong) -> Round:
    return next(
        r for r in rounds(ws.root) if r.meta["challenger"]["fingerprint"] == strong.fingerprint and not r.closed_at
    )


def vote(rnd: Round, item: int, reviewer: str, prefer: str) -> None:
    """A vote for `prefer` (challenger or champion) on `item`, as the page sends it."""
    side = "A" if rnd.order[item][0] == prefer else "B"
    ratings = {side: {"fluency": 4, "coherence": 4, "relevance": 3}}
    payload = {"reviewer": reviewer, "item": item, "choice": side, "ratings": ratings}
    rnd.store.record(parse_vote(payload, rnd.order))


# ----------------------------------------------------------------------------- the fingerprint


def test_human_review_keys_the_registration_only_when_on():
    default = RegistryConfig()
    assert not default.human_review and "human_review" not in default.fingerprint_fields()
    assert "review_timeout_h" not in default.fingerprint_fields()  # how long to wait: not what is registered
    on = RegistryConfig(human_review=True)
    assert on.fingerprint_fields()["human_review"] is True
    assert RegistryConfig(review_timeout_h=1).fingerprint_fields() == default.fingerprint_fields()


# ----------------------------------------------------------------------------- the gate


def test_the_paused_register_flow_resumes_when_the_rounds_votes_approve(models):
    cfg, ws, weak_eval, strong_eval, strong = models
    cfg = gated(cfg, "gate-votes")
    register_weak_champion(cfg, ws, weak_eval, "gate-votes")
    thread, out = start_register_flow(cfg, strong_eval)
    flow_run = paused_run(thread, out)
    rnd = open_round_of(ws, strong)
    assert rnd.meta["champion"]["fingerprint"] != strong.fingerprint and len(rnd) >= 2
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    # while paused: the new version is challenger only, awaiting review, the gate's say kept
    assert str(client.get_model_version_by_alias("gate-votes", "champion").version) == "1"
    waiting = client.get_model_version("gate-votes", "2")
    assert waiting.tags["lmforge.review.status"] == "awaiting" and waiting.tags["lmforge.gate_decision"] == "champion"
    assert waiting.tags["lmforge.decision"] == "challenger"

    vote(rnd, 0, "bo", "challenger")
    vote(rnd, 1, "cy", "challenger")  # review.min_votes=2, both prefer the challenger
    ref, artifacts = finished(thread, out, flow_run.id)

    reg = json.loads((ref.dir / "registration.json").read_text())
    assert reg["awaiting_review"] and reg["gate_decision"] == "champion" and reg["version"] == "2"
    assert str(client.get_model_version_by_alias("gate-votes", "champion").version) == "2"
    tags = client.get_model_version("gate-votes", "2").tags
    assert tags["lmforge.review.status"] == "approved" and tags["lmforge.review.decision"] == "approve"
    assert tags["lmforge.review.by"] == f"the votes of round {rnd.id}" and tags["lmforge.review.round"] == rnd.id
    assert (tags["lmforge.review.votes"], tags["lmforge.review.reviewers"]) == ("2", "bo, cy")
    assert tags["lmforge.review.win_rate"] == "1.0000" and tags["lmforge.review.timed_out"] == "false"
    assert json.loads(tags["lmforge.review.ratings"])["challenger"]["fluency"] == 4.0
    assert tags["lmforge.decision"] == "champion" and "people prefer the challenger" in tags["lmforge.review.reason"]
    # the challenger's run: the results as metrics, the votes as a table
    run = client.get_run(reg["mlflow_run_id"])
    assert run.data.metrics["review/win_rate"] == 1.0 and run.data.metrics["review/votes"] == 2
    assert run.data.metrics["review/challenger_fluency"] == 4.0 and "review/ci_low" in run.data.metrics
    logged = {f.path for f in client.list_artifacts(run.info.run_id, f"review/{rnd.id}")}
    assert logged == {f"review/{rnd.id}/votes.json", f"review/{rnd.id}/results.json"}
    # the round is closed and its votes published; the UI shows how to review and the decision
    assert rnd.closed_at and (ws.root / "votes" / rnd.store.state("artifact") / "votes.arrow").is_file()
    assert {"review-gate-votes", "review-decision-gate-votes", "review-results-gate-votes"} <= set(artifacts)
    assert "lmforge review serve" in artifacts["review-gate-votes"].data
    assert "champion" in artifacts["review-decision-gate-votes"].data

    # applying the same decision again changes nothing; another one is refused
    evidence = {"round": rnd.id, "votes": 2}
    assert apply_review(cfg, ref.dir, "approve", evidence, "x")["decided_at"] == tags["lmforge.review.decided_at"]
    with pytest.raises(ReviewError, match="was approved by the votes"):
        apply_review(cfg, ref.dir, "reject", evidence, "x")
    # a rerun finds the review decided: cached, no pause
    thread, out = start_register_flow(cfg, strong_eval)
    thread.join(120)
    assert out["ref"].fingerprint == ref.fingerprint


def test_a_person_rejects_through_the_resume_form_and_the_challenger_stays(models):
    cfg, ws, weak_eval, strong_eval, strong = models
    cfg = gated(cfg, "gate-person")
    register_weak_champion(cfg, ws, weak_eval, "gate-person")
    thread, out = start_register_flow(cfg, strong_eval)
    flow_run = paused_run(thread, out)
    vote(open_round_of(ws, strong), 0, "bo", "challenger")  # not enough votes to decide
    # a decision the form does not offer is refused by the API, and the run stays paused
    with pytest.raises(RuntimeError, match="decision"):
        resume_flow_run(flow_run.id, run_input={"decision": "maybe", "reviewer": "ann"})
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run.id).state.type == StateType.PAUSED
    # what the UI's Resume form sends
    resume_flow_run(flow_run.id, run_input={"decision": "reject", "reviewer": "ann", "note": "answers too terse"})
    ref, artifacts = finished(thread, out, flow_run.id)

    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert str(client.get_model_version_by_alias("gate-person", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("gate-person", "challenger").version) == "2"
    tags = client.get_model_version("gate-person", "2").tags
    assert tags["lmforge.review.status"] == "rejected" and tags["lmforge.review.by"] == "ann"
    assert tags["lmforge.review.note"] == "answers too terse" and tags["lmforge.review.votes"] == "1"
    assert tags["lmforge.review.reason"].startswith("ann chose reject") and tags["lmforge.decision"] == "challenger"
    assert "stays challenger" in artifacts["review-decision-gate-person"].data


def test_no_decision_in_time_is_recorded_and_the_challenger_stays(models):
    cfg, ws, weak_eval, strong_eval, strong = models
    cfg = gated(cfg, "gate-timeout", review_timeout_h=6 / 3600)  # 6 s
    register_weak_champion(cfg, ws, weak_eval, "gate-timeout")
    started = time.monotonic()
    thread, out = start_register_flow(cfg, strong_eval)
    flow_run = paused_run(thread, out)
    rnd = open_round_of(ws, strong)
    vote(rnd, 0, "bo", "champion")
    ref, _ = finished(thread, out, flow_run.id)
    assert time.monotonic() - started >= 6

    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert str(client.get_model_version_by_alias("gate-timeout", "champion").version) == "1"
    tags = client.get_model_version("gate-timeout", "2").tags
    assert tags["lmforge.review.status"] == "timed_out" and tags["lmforge.review.timed_out"] == "true"
    assert (tags["lmforge.review.by"], tags["lmforge.review.votes"]) == ("nobody", "1")
    assert not rnd.closed_at  # the round stays open for the next run of the flow

    # `lmforge review close` logs the results to the challenger's run, once
    reg = json.loads((ref.dir / "registration.json").read_text())
    args = ["review", "close", rnd.id, "--set", f"workspace={ws.root}"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"logged to MLflow: the run {reg['mlflow_run_id']} of gate-timeout v2" in result.output
    run = client.get_run(reg["mlflow_run_id"])
    assert run.data.metrics["review/votes"] == 1 and run.data.metrics["review/win_rate"] == 0.0
    assert client.list_artifacts(run.info.run_id, f"review/{rnd.id}")
    logged = len(client.get_metric_history(run.info.run_id, "review/votes"))
    CliRunner().invoke(app, args, catch_exceptions=False)
    assert len(client.get_metric_history(run.info.run_id, "review/votes")) == logged


def test_without_human_review_the_register_flow_never_pauses(models):
    cfg, ws, weak_eval, strong_eval, _ = models
    cfg = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"model_name": "gate-off"})})
    run_register(cfg, weak_eval, ws)
    made = len(rounds(ws.root))
    assert register_fingerprint(cfg, strong_eval) != register_fingerprint(gated(cfg, "gate-off"), strong_eval)
    thread, out = start_register_flow(cfg, strong_eval)
    thread.join(240)
    reg = json.loads((out["ref"].dir / "registration.json").read_text())
    assert (reg["version"], reg["champion"]) == ("2", True) and "awaiting_review" not in reg
    assert len(rounds(ws.root)) == made  # no round made
