"""The human review gate (`registry.human_review`): after `register`, a flow whose challenger
awaits people pauses until they decide.

    register says: the gate would make it champion, awaiting review (registration.json)
      -> a review round: this model against the current champion (an open one for the same two
         models is taken up again: its votes stay)
      -> a markdown artifact: how to review (`lmforge review serve`) and how to decide in the UI
      -> pause_flow_run(wait_for_input=ReviewInput, timeout=registry.review_timeout_h)
         resumed by whichever comes first:
           the round's votes: a watcher thread polls them and, once `review_decision` says
             approve or reject (review.min_votes reached), resumes the run with that decision
           a person: the run's Resume button in Prefect's UI asks for decision, reviewer, note
      -> the round closed (its votes published), the decision applied (`lm_core.registry.promote`:
         champion moves on approval), shown as an artifact
    no answer in time: recorded as timed out, the challenger stays challenger, the run goes on.

A flow with human_review off never pauses: its registrations never await review.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from typing import Any, Literal
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from pydantic import Field

from lm_core.config import Config
from lm_core.review.gate import review_decision
from lm_core.review.round import Round
from lm_core.ui_text import md_escape
from lm_core.workspace import ArtifactRef, Workspace
from tasks.common import get_console
from tasks.ui_artifacts import readable_table, send_ui_artifact

logger = logging.getLogger("lmforge.review_gate")
WATCH_EVERY_S = 3.0  # how often the watcher reads the round's votes
POLL_S = 2  # how often the paused run asks the API whether it was resumed


class ReviewInput(RunInput):
    """The form the paused run shows in Prefect's UI (its Resume button)."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the challenger becomes champion; reject: it stays challenger"
    )
    reviewer: str = Field(pattern=r"\S", max_length=64, description="who decides (recorded on the model version)")
    note: str = Field("", description="why, in a few words (recorded on the model version)")


def review_gate(config: Config, registration: ArtifactRef) -> dict[str, str] | None:
    """Pause the calling flow run for people's decision on the version `registration` made, if
    it awaits one (see the module's docstring); returns the recorded review tags, None when the
    registration awaits none."""
    reg = json.loads((registration.dir / "registration.json").read_text(encoding="utf-8"))
    if not reg.get("awaiting_review"):
        return None
    # MLflow, pyarrow, torch: only for a registration that awaits review (a cached run imports none)
    from lm_core.registry.promote import FINAL, apply_review, review_status
    from lm_core.review.results import RESULTS_FILE, close_round, round_results

    recorded = review_status(config, reg)
    if recorded.get("status") in FINAL:  # a rerun of a run whose review was decided
        return recorded
    name, version = reg["name"], reg["version"]
    ws = Workspace(config.workspace)
    rnd, problem = review_round(config, registration, reg, ws)
    say(
        f"review    {name} v{version} awaits human review: "
        + (f"round {rnd.id}, `lmforge review serve {rnd.id}`" if rnd else str(problem))
        + f"; waiting up to {duration(config.registry.review_timeout_h)} (or Resume in Prefect's UI)"
    )
    send_ui_artifact(
        create_markdown_artifact,
        how_to_review(config, reg, rnd, problem),
        key=f"review-{artifact_key(name)}",
        description=f"{name} v{version} awaits human review",
    )
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None, "the review gate pauses a flow run: call it in one"
    watcher = RoundWatcher(ctx.flow_run.id, rnd, config) if rnd is not None else None
    timeout_s = max(1, round(config.registry.review_timeout_h * 3600))
    try:
        answer = pause_flow_run(
            wait_for_input=ReviewInput,
            timeout=timeout_s,
            poll_interval=min(POLL_S, timeout_s),
            key=f"review-{name}-v{version}",
        )
    except FlowPauseTimeout:
        answer = None
        _running_again(ctx.flow_run.id, f"no review decision in {duration(config.registry.review_timeout_h)}")
    finally:
        if watcher is not None:
            watcher.stop()

    votes, results = None, None
    if rnd is not None:
        if answer is not None:  # decided: no more votes; the round's votes are published
            votes = close_round(rnd, ws)
            results = json.loads((votes.dir / RESULTS_FILE).read_text(encoding="utf-8"))
        else:  # timed out: the round stays open, for the next run of the flow to take up
            results = {"round": rnd.id, **round_results(len(rnd), rnd.store.votes(), seed=rnd.meta.get("seed", 0))}
    evidence: dict[str, Any] = {"round": rnd.id if rnd else None}
    if results is not None:
        evidence = review_decision(results, config.review.min_votes, config.review.min_win_rate).evidence
    if answer is None:
        decision, by, note = "timeout", "nobody", ""
        evidence["reason"] = (
            f"no decision in {duration(config.registry.review_timeout_h)}: the challenger stays challenger"
        )
    else:
        decision, by, note = answer.decision, answer.reviewer, answer.note
        by_votes = watcher is not None and watcher.resumed
        evidence["reason"] = (
            note if by_votes else f"{by} chose {decision} in Prefect's UI" + (f": {note}" if note else "")
        )
    tags = apply_review(
        config, registration.dir, decision, evidence, by, note, results=results, votes_dir=votes.dir if votes else None
    )
    send_ui_artifact(
        create_markdown_artifact,
        decision_markdown(reg, tags, votes),
        key=f"review-decision-{artifact_key(name)}",
        description=f"{name} v{version}: {tags['status']}",
    )
    if results is not None and results["votes"]:
        send_ui_artifact(
            create_table_artifact,
            readable_table(_results_rows(results)),
            key=f"review-results-{artifact_key(name)}",
            description=f"review round {results['round']}: the challenger against the champion",
        )
    say(f"review    {name} v{version} {tags['status']} by {by}: {evidence['reason']}")
    return tags


# ----------------------------------------------------------------------------- the round


def review_round(config: Config, registration: ArtifactRef, reg: dict[str, Any], ws: Workspace):
    """(the round that compares the registered model with the current champion, None) or, when
    none can be made (no champion any more, a champion not in this workspace), (None, why)."""
    from lm_core.registry.fingerprint import scored_stage  # MLflow: only for a registration awaiting review
    from lm_core.registry.register import current_champion

    inputs = registration.manifest()["inputs"]
    challenger = inputs[scored_stage(inputs)]
    champion = current_champion(config.tracking_uri, reg["name"])
    if champion is None:
        return None, f"{reg['name']} has no champion to compare with"
    try:
        return open_or_new_round(config, ws, challenger, champion.model_uri), None
    except (LookupError, ValueError) as e:  # a model not in this workspace, no prompts
        return None, f"no review round could be made: {e}"


def open_or_new_round(
    config: Config, ws: Workspace, challenger: str, champion: str, prompts: str | None = None
) -> Round:
    """The open round between the models two specs name (left by a run that did not finish: its
    votes stay), else a new one (`lm_core.review.make.new_round`). Shared with flows/review.py."""
    from lm_core.model_spec import find_model_artifact  # torch, pyarrow: only when a round is made
    from lm_core.review.make import new_round
    from lm_core.review.round import rounds

    pair = tuple(find_model_artifact(spec, ws, config.tracking_uri).fingerprint for spec in (challenger, champion))
    for rnd in rounds(ws.root):  # newest first
        m = rnd.meta
        if not rnd.closed_at and (m["challenger"]["fingerprint"], m["champion"]["fingerprint"]) == pair:
            return rnd
    return new_round(ws, challenger, champion, config.review, prompts, tracking_uri=config.tracking_uri)


class RoundWatcher:
    """Polls a round's votes on a thread of its own and resumes the paused flow run with the
    decision they support, once they support one. A run resumed first (by a person) or not yet
    paused refuses the resume: the watcher tries again until it is stopped."""

    def __init__(self, flow_run_id: UUID, rnd: Round, config: Config):
        self.flow_run_id, self.round, self.config = flow_run_id, rnd, config
        self.resumed = False
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the API this process talks to
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name="lmforge-review-watcher", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        from lm_core.review.results import round_results  # pyarrow: only while a review is open

        while not self._stop.wait(WATCH_EVERY_S):
            try:
                votes = self.round.store.votes()
                results = round_results(len(self.round), votes, seed=self.round.meta.get("seed", 0))
                d = review_decision(results, self.config.review.min_votes, self.config.review.min_win_rate)
                if d.decision == "wait":
                    continue
                by = f"the votes of round {self.round.id}"
                self.resumed = True  # before the resume: the flow reads it as soon as it runs again
                resume_flow_run(self.flow_run_id, run_input={"decision": d.decision, "reviewer": by, "note": d.reason})
                return
            except Exception as e:  # noqa: BLE001 - not paused yet, or resumed by a person: try again
                self.resumed = False
                logger.debug("review watcher: %s", e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _running_again(flow_run_id: UUID, why: str) -> None:
    """A pause that timed out leaves the run Paused, and the API refuses its tasks: the run goes
    on (the challenger stays challenger) as Running again. Forced: the API would fail a run
    resumed after its pause's deadline."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Running(message=why), force=True)


# ----------------------------------------------------------------------------- what the UI shows


def how_to_review(config: Config, reg: dict[str, Any], rnd: Round | None, problem: str | None) -> str:
    name, version = reg["name"], reg["version"]
    where = f" --set workspace={Workspace(config.workspace).root}"
    hours = duration(config.registry.review_timeout_h)
    lines = [
        f"## {md_escape(name)} v{version} awaits human review",
        "",
        f"The automatic gate would make it champion: {md_escape(reg['reason'])}",
        "",
        "It stays **challenger** until people approve it (`registry.human_review`). This flow run is "
        f"paused until they decide, for {hours} at most; then the challenger stays challenger.",
        "",
    ]
    if rnd is not None:
        lines += [
            f"**Review round `{rnd.id}`**: {len(rnd)} prompts, both models' answers side by side.",
            "",
            f"1. Serve the page to reviewers: `lmforge review serve {rnd.id}{where}` "
            f"(http://127.0.0.1:{config.review.port}/).",
            f"2. The run resumes by itself once {config.review.min_votes} votes are in (`review.min_votes`): "
            f"approved if the challenger's win rate (ties half) is above {config.review.min_win_rate:g}, else rejected",
        ]
    else:
        lines += [f"No review round: {md_escape(problem or '')}.", ""]
    lines += [
        f"{'3' if rnd else '1'}. Or decide yourself: this flow run's **Resume** button asks for the decision "
        "(approve or reject), your name and a note.",
    ]
    return "\n".join(lines)


def decision_markdown(reg: dict[str, Any], tags: dict[str, str], votes: ArtifactRef | None) -> str:
    what = {
        "approved": "approved: it is now **champion**",
        "rejected": "rejected: it stays challenger",
        "timed_out": "not decided in time: it stays challenger",
    }[tags["status"]]
    lines = [
        f"**{md_escape(reg['name'])} v{reg['version']}**: {what}.",
        "",
        f"- by: {md_escape(tags.get('by', ''))}",
        f"- reason: {md_escape(tags.get('reason', ''))}",
        f"- round: `{tags.get('round', '-')}`, {tags.get('votes', '0')} votes from "
        f"{md_escape(tags.get('reviewers') or 'no one')}",
        f"- challenger win rate: {tags.get('win_rate', 'none')} (95% CI {tags.get('ci', 'none')})",
    ]
    if votes is not None:
        lines.append(f"- votes published: `{votes.dir}`")
    return "\n".join(lines)


def _results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {"figure": "win rate (challenger)", "value": results["win_rate"]},
        {"figure": "CI low", "value": results["ci"][0] if results["ci"] else None},
        {"figure": "CI high", "value": results["ci"][1] if results["ci"] else None},
        {"figure": "votes", "value": results["votes"]},
    ]
    for model, ratings in results["ratings"].items():
        rows += [{"figure": f"{model} {c}", "value": v} for c, v in ratings.items()]
    return rows


def say(line: str) -> None:
    """A line in the terminal, and in the flow run's log for the UI."""
    get_console().print(line, markup=False, highlight=False, soft_wrap=True)
    try:
        get_run_logger().info(line)
    except Exception:  # noqa: BLE001 - no run context: the terminal line is enough
        pass


def duration(hours: float) -> str:
    seconds = hours * 3600
    return f"{hours:g} h" if hours >= 1 else f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"


def artifact_key(name: str) -> str:
    """An artifact key: lowercase letters, digits and dashes."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())
