"""What people decided about a challenger awaiting review (`registry.human_review`), recorded in
MLflow: `champion` moves to it when they approve, and stays where it is when they reject or do
not answer in time.

The decision and its evidence go on the model version as `lmforge.review.*` tags (decision, who,
round, votes, reviewers, win rate, interval, mean ratings, timed out or not), and the round's
results on the challenger's run: metrics `review/win_rate`, `review/ci_low`, `review/ci_high`,
`review/votes`, `review/<model>_<criterion>`, and the votes as a table (`review/<round>/votes.json`,
which MLflow's artifact view shows as a table) beside `review/<round>/results.json`. MLflow 3's
assessments (feedback) attach to traces, and a review round is no trace: metrics and a table it is.

Applying a decision again changes nothing; an approval or a rejection is final for its version
(a timeout is not: the next run of the flow asks again).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from lm_core.config import Config
from lm_core.model_spec import registry_client
from lm_core.registry.register import CHAMPION, DECISION_TAG
from lm_core.review.round import ReviewError
from lm_core.review.votes import CRITERIA, MODELS

OUTCOME = {"approve": "approved", "reject": "rejected", "timeout": "timed_out"}
FINAL = ("approved", "rejected")
TAG = "lmforge.review."
LOGGED_TAG = "lmforge.review.logged"  # on the run: the round and votes whose results it holds


def read_registration(registration_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(registration_dir) / "registration.json").read_text(encoding="utf-8"))


def review_status(cfg: Config, registration: dict[str, Any]) -> dict[str, str]:
    """The version's `lmforge.review.*` tags (`status` among them: awaiting, approved, ...),
    without the prefix."""
    mv = registry_client(cfg.tracking_uri).get_model_version(registration["name"], registration["version"])
    return {k.removeprefix(TAG): v for k, v in mv.tags.items() if k.startswith(TAG)}


def apply_review(
    cfg: Config,
    registration_dir: str | Path,
    decision: str,
    evidence: dict[str, Any],
    by: str,
    note: str = "",
    results: dict[str, Any] | None = None,
    votes_dir: str | Path | None = None,
) -> dict[str, str]:
    """Record `decision` (approve, reject, timeout) on the version the register artifact at
    `registration_dir` made, with `evidence` (`lm_core.review.gate.review_decision`'s, plus its
    `reason`) and who took it; on approval the version becomes champion. `results` and
    `votes_dir` (a published votes artifact) go to the challenger's run. Returns the review tags."""
    if decision not in OUTCOME:
        raise ReviewError(f"a review decides approve, reject or timeout, not {decision!r}")
    reg = read_registration(registration_dir)
    name, version = reg["name"], reg["version"]
    client = registry_client(cfg.tracking_uri)
    recorded = review_status(cfg, reg)
    status = OUTCOME[decision]
    if recorded.get("status") == status and recorded.get("round", "") == str(evidence.get("round") or ""):
        return recorded  # applied already
    if recorded.get("status") in FINAL:
        raise ReviewError(
            f"{name} v{version} was {recorded['status']} by {recorded.get('by', '?')} "
            f"(round {recorded.get('round', '?')}): a review decides once"
        )
    tags = review_tags(decision, evidence, by, note)
    if decision == "approve":
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, DECISION_TAG, CHAMPION)
    for key, value in tags.items():  # the status last: a run killed before it applies the review again
        client.set_model_version_tag(name, version, key, value)
    if results is not None:
        log_review_run(cfg.tracking_uri, reg["mlflow_run_id"], results, votes_dir)
    return {k.removeprefix(TAG): v for k, v in tags.items()}


def review_tags(decision: str, evidence: dict[str, Any], by: str, note: str) -> dict[str, str]:
    win_rate, ci = evidence.get("win_rate"), evidence.get("ci")
    tags = {
        "decision": decision,
        "by": by,
        "note": note,
        "reason": evidence.get("reason", ""),
        "round": str(evidence.get("round") or ""),
        "votes": str(evidence.get("votes", 0)),
        "reviewers": ", ".join(evidence.get("reviewers") or []),
        "win_rate": "none" if win_rate is None else f"{win_rate:.4f}",
        "ci": "none" if not ci else f"{ci[0]:.4f}-{ci[1]:.4f}",
        "ratings": json.dumps(evidence.get("ratings") or {}, sort_keys=True),
        "min_votes": str(evidence.get("min_votes", "")),
        "min_win_rate": str(evidence.get("min_win_rate", "")),
        "timed_out": str(decision == "timeout").lower(),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": OUTCOME[decision],
    }
    return {TAG + k: v[:4900] for k, v in tags.items() if v != ""}  # MLflow keeps 5000 characters a tag


def log_review_run(
    tracking_uri: str, run_id: str, results: dict[str, Any], votes_dir: str | Path | None = None
) -> bool:
    """A round's results as metrics of the run, and (`votes_dir`: its published votes) the votes
    as a table beside its results.json. Once per round and set of votes: False when the run holds
    them already."""
    client = registry_client(tracking_uri)
    logged = f"{results.get('round')}:{results['votes']}:{Path(votes_dir).name if votes_dir else ''}"
    if client.get_run(run_id).data.tags.get(LOGGED_TAG) == logged:
        return False
    now = int(datetime.now(UTC).timestamp() * 1000)
    values: dict[str, float | None] = {"review/votes": results["votes"], "review/win_rate": results["win_rate"]}
    if results.get("ci"):
        values |= {"review/ci_low": results["ci"][0], "review/ci_high": results["ci"][1]}
    for model in MODELS:
        for c in CRITERIA:
            values[f"review/{model}_{c}"] = (results.get("ratings") or {}).get(model, {}).get(c)
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("lmforge.review.round", str(results.get("round")))])
    if votes_dir is not None:
        from lm_core.review.results import read_closed  # pyarrow: only with the votes

        _, votes, _ = read_closed(votes_dir)
        folder = f"review/{results.get('round')}"
        client.log_table(run_id, _votes_columns(votes), f"{folder}/votes.json")
        client.log_dict(run_id, results, f"{folder}/results.json")
    client.set_tag(run_id, LOGGED_TAG, logged)
    return True


def _votes_columns(votes: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The votes as columns MLflow's table view shows: the prompt's last turn, both answers, the
    vote and its ratings."""
    columns = ["item", "reviewer", "preferred", "prompt", "challenger_answer", "champion_answer"]
    columns += [f"{m}_{c}" for m in MODELS for c in CRITERIA] + ["better_answer", "voted_at"]
    rows = [{**v, "prompt": v["prompt"][-1]["content"] if v["prompt"] else ""} for v in votes]
    return {c: [r.get(c) for r in rows] for c in columns}


def registered_challenger(tracking_uri: str, round_meta: dict[str, Any]) -> tuple[str, str, str] | None:
    """(name, version, run id) of the registered version a round's challenger was registered as
    (its `lmforge.<stage>` tag; not an int8 copy), or None."""
    uri = tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # nothing registered; MLflow would make an empty store
    stage, fp = round_meta["challenger"]["stage"], round_meta["challenger"]["fingerprint"]
    try:
        found = registry_client(uri).search_model_versions(f"tag.`lmforge.{stage}` = '{fp}'")
    except MlflowException:
        return None
    found = [v for v in found if "lmforge.quantized" not in v.tags and v.run_id]
    if not found:
        return None
    mv = min(found, key=lambda v: int(v.version))
    return mv.name, str(mv.version), mv.run_id
