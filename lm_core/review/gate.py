"""The promotion decision a review round's results support, for the register flow's human gate.

    wait      fewer than `min_votes` votes so far: the round goes on
    approve   the challenger's win rate (ties counted half) is above `min_win_rate`
    reject    it is not

A pure function of the results (`lm_core.review.results.round_results`, or a closed round's
`results.json`): the gate polls it as votes arrive and records the decision with its evidence.
A person's own approval or rejection in the gate overrides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["approve", "reject", "wait"]


@dataclass(frozen=True)
class ReviewDecision:
    decision: Decision
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def review_decision(results: Mapping[str, Any], min_votes: int, min_win_rate: float = 0.5) -> ReviewDecision:
    """approve / reject / wait, with the reason in words and the figures it rests on: win rate,
    its interval, mean ratings, votes, reviewers and the thresholds."""
    votes, win_rate, ci = results["votes"], results["win_rate"], results["ci"]
    evidence = {
        "round": results.get("round"),
        "votes": votes,
        "items_voted": results["items_voted"],
        "items": results["items"],
        "reviewers": sorted(results["reviewers"]),
        "win_rate": win_rate,
        "ci": ci,
        "confidence": results.get("confidence"),
        "ratings": results["ratings"],
        "preferred": results["preferred"],
        "min_votes": min_votes,
        "min_win_rate": min_win_rate,
    }
    if votes < min_votes or win_rate is None:
        return ReviewDecision("wait", f"{votes} of the {min_votes} votes needed so far", evidence)
    shown = f"win rate {win_rate:.2f} ({_interval(results)}, {votes} votes from {len(results['reviewers'])} reviewers)"
    if win_rate > min_win_rate:
        return ReviewDecision("approve", f"people prefer the challenger: {shown} > {min_win_rate:g}", evidence)
    return ReviewDecision("reject", f"people do not prefer the challenger: {shown} <= {min_win_rate:g}", evidence)


def _interval(results: Mapping[str, Any]) -> str:
    lo, hi = results["ci"]
    return f"{round(100 * results.get('confidence', 0.95))}% CI {lo:.2f}-{hi:.2f}"
