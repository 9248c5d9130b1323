"""What a round's votes say, and closing a round into a published artifact.

Win rate: each vote scores the challenger 1 (its answer preferred), 0.5 (a tie) or 0; an item's
score is the mean of its votes, and the win rate the mean over the items voted on, so an item
that three people judged counts as much as one judged once. Its confidence interval is a
percentile bootstrap over those items (resampled with replacement, seeded: the same votes give
the same interval).

Agreement, on the items that two or more reviewers judged (challenger, champion or tie): the
share of reviewer pairs on an item that agree; Fleiss' kappa over those items (any number of
reviewers per item); Cohen's kappa for each pair of reviewers over the items both judged. A
kappa is None where it is undefined (one category only: chance agreement is 1).

    <workspace>/votes/<fingerprint>/    what `close_round` publishes (atomically; the same votes
        votes.arrow     one row per vote, with its prompt and both answers (datasets-readable)
        results.json    `round_results` of the votes
        round.json      the round as it was made
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lm_core.review.round import ROUND_FILE, Round
from lm_core.review.votes import CRITERIA, MODELS, RATING_COLUMNS
from lm_core.shards import read_shard, write_shard
from lm_core.workspace import ArtifactRef, Workspace, content_digest, fingerprint, write_json_atomic

STAGE = "votes"  # the published artifact's folder in the workspace
CODE_VERSION = 1
VOTES_TABLE = "votes.arrow"
RESULTS_FILE = "results.json"
LABELS = ("challenger", "champion", "tie")
SCORE = {"challenger": 1.0, "tie": 0.5, "champion": 0.0}

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema(
    [
        ("round", pa.string()),
        ("item", pa.int64()),
        ("reviewer", pa.string()),
        ("choice", pa.string()),
        ("preferred", pa.string()),
        *((c, pa.int64()) for c in RATING_COLUMNS),
        ("better_answer", pa.string()),
        ("voted_at", pa.string()),
        ("shown_as_a", pa.string()),
        ("prompt", _MESSAGES),
        ("challenger_answer", pa.string()),
        ("champion_answer", pa.string()),
    ]
)


# ----------------------------------------------------------------------------- results


def round_results(
    n_items: int, votes: Sequence[dict[str, Any]], seed: int = 0, resamples: int = 2000, confidence: float = 0.95
) -> dict[str, Any]:
    """Counts, the challenger's win rate with its bootstrap interval, mean ratings per model and
    criterion, and agreement between reviewers, of a round of `n_items` items."""
    by_item: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for v in votes:
        by_item[v["item"]].append(v)
    scores = np.array([np.mean([SCORE[v["preferred"]] for v in vs]) for _, vs in sorted(by_item.items())])
    win_rate, interval = None, None
    if len(scores):
        win_rate = float(scores.mean())
        rng = np.random.default_rng(seed)
        means = scores[rng.integers(0, len(scores), size=(resamples, len(scores)))].mean(axis=1)
        tail = (1 - confidence) / 2
        interval = [float(q) for q in np.quantile(means, [tail, 1 - tail])]
    reviewers = Counter(v["reviewer"] for v in votes)
    return {
        "items": n_items,
        "items_voted": len(by_item),
        "votes": len(votes),
        "reviewers": dict(sorted(reviewers.items())),
        "preferred": {label: sum(v["preferred"] == label for v in votes) for label in LABELS},
        "win_rate": win_rate,
        "ci": interval,
        "confidence": confidence,
        "bootstrap": {"resamples": resamples, "seed": seed},
        "ratings": mean_ratings(votes),
        "agreement": agreement(by_item),
        "written_answers": sum(bool(v.get("better_answer")) for v in votes),
    }


def mean_ratings(votes: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """model -> criterion -> mean of the ratings given (None: none given)."""
    out: dict[str, dict[str, float | None]] = {}
    for model in MODELS:
        out[model] = {}
        for c in CRITERIA:
            given = [v[f"{model}_{c}"] for v in votes if v.get(f"{model}_{c}") is not None]
            out[model][c] = float(np.mean(given)) if given else None
    return out


def agreement(by_item: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    shared = {i: vs for i, vs in by_item.items() if len(vs) >= 2}
    pairs = [(a["preferred"], b["preferred"]) for vs in shared.values() for a, b in combinations(vs, 2)]
    per_reviewer: dict[str, dict[int, str]] = defaultdict(dict)
    for i, vs in shared.items():
        for v in vs:
            per_reviewer[v["reviewer"]][i] = v["preferred"]
    cohen = {}
    for r1, r2 in combinations(sorted(per_reviewer), 2):
        both = sorted(set(per_reviewer[r1]) & set(per_reviewer[r2]))
        if both:
            labels = [[per_reviewer[r][i] for i in both] for r in (r1, r2)]
            cohen[f"{r1} / {r2}"] = cohen_kappa(*labels)
    return {
        "items": len(shared),
        "pairs": len(pairs),
        "pairwise": sum(a == b for a, b in pairs) / len(pairs) if pairs else None,
        "fleiss_kappa": fleiss_kappa([[v["preferred"] for v in vs] for vs in shared.values()]),
        "cohen_kappa": cohen,
    }


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items; None where chance agreement is 1."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    chance = sum(ca[k] * cb[k] for k in LABELS) / (n * n)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa of items each labelled by two or more raters (their number may vary per
    item); None with no such item or where chance agreement is 1."""
    items = [labels for labels in items if len(labels) >= 2]
    if not items:
        return None
    counts = np.array([[Counter(labels)[k] for k in LABELS] for labels in items], dtype=float)
    n = counts.sum(axis=1)
    per_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / n.sum()
    chance = float((shares**2).sum())
    return None if chance >= 1 else (float(per_item.mean()) - chance) / (1 - chance)


# ----------------------------------------------------------------------------- closing


def votes_table(rnd: Round, votes: Sequence[dict[str, Any]]) -> pa.Table:
    items = {item.id: item for item in rnd.items}
    rows = [
        {
            **v,
            "round": rnd.id,
            "shown_as_a": items[v["item"]].order[0],
            "prompt": [m.to_dict() for m in items[v["item"]].prompt],
            "challenger_answer": items[v["item"]].answers["challenger"],
            "champion_answer": items[v["item"]].answers["champion"],
        }
        for v in votes
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def close_round(rnd: Round, ws: Workspace) -> ArtifactRef:
    """Close the round (no vote is taken after this) and publish its votes and results as the
    artifact `votes/<fingerprint>`; the same votes publish the same artifact, once. The
    bootstrap is seeded with the round's seed."""
    closed_at, votes = rnd.store.close()
    seed = rnd.meta.get("seed", 0)
    digest = hashlib.sha256(json.dumps(votes, sort_keys=True).encode()).hexdigest()[:16]
    inputs = {
        "challenger": rnd.meta["challenger"]["fingerprint"],
        "champion": rnd.meta["champion"]["fingerprint"],
        "round": content_digest([rnd.dir / ROUND_FILE]),
        "votes": digest,
    }
    config = {"round": rnd.id, "seed": seed}
    fp = fingerprint(STAGE, config, inputs, CODE_VERSION)
    with ws.build(STAGE, fp, config=config, inputs=inputs) as b:
        if not b.published:
            results = {"round": rnd.id, "closed_at": closed_at, **round_results(len(rnd), votes, seed=seed)}
            write_shard(b.dir / VOTES_TABLE, votes_table(rnd, votes))
            write_json_atomic(b.dir / RESULTS_FILE, results)
            shutil.copyfile(rnd.dir / ROUND_FILE, b.dir / ROUND_FILE)
            b.stats = {
                "rows": len(votes),
                "round": rnd.id,
                "win_rate": results["win_rate"],
                "ci": results["ci"],
                "reviewers": len(results["reviewers"]),
            }
    rnd.store.set_state("artifact", fp)
    return b.ref


def read_closed(artifact_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(the round as made, its votes, its results) from a published votes artifact."""
    folder = Path(artifact_dir)
    meta = json.loads((folder / ROUND_FILE).read_text(encoding="utf-8"))
    votes = read_shard(folder / VOTES_TABLE, SCHEMA).to_pylist()
    results = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
    return meta, votes, results
