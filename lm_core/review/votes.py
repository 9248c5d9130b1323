"""The votes of a review round: one SQLite file, `votes.sqlite`, in the round's folder.

One row per (item, reviewer): which answer was better as shown (A, B or tie) and which model
that is (challenger, champion or tie), 1-5 ratings of each model's answer for fluency, coherence
and relevance (each may be left out), a better answer the reviewer wrote (optional), and when.
A reviewer voting again on an item replaces their own vote and no one else's.

Durable as it arrives: each vote is its own transaction, committed (WAL journal, synchronous
FULL) before the reviewer is told it is saved, so a killed server loses nothing it
acknowledged. Writers take SQLite's write lock in turn (a connection per request, waiting up
to 30 s), so concurrent reviewers never overwrite each other. Closing the round records that in
the same database, under the same lock: no vote lands after the votes were read for publishing.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CRITERIA = ("fluency", "coherence", "relevance")
MODELS = ("challenger", "champion")
CHOICES = ("A", "B", "tie")
MAX_REVIEWER_CHARS = 64
MAX_ANSWER_CHARS = 20_000
RATING_COLUMNS = tuple(f"{m}_{c}" for m in MODELS for c in CRITERIA)
COLUMNS = ("item", "reviewer", "choice", "preferred", *RATING_COLUMNS, "better_answer", "voted_at")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS votes (
    item INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    preferred TEXT NOT NULL CHECK (preferred IN ('challenger', 'champion', 'tie')),
    {", ".join(f"{c} INTEGER CHECK ({c} BETWEEN 1 AND 5)" for c in RATING_COLUMNS)},
    better_answer TEXT,
    voted_at TEXT NOT NULL,
    PRIMARY KEY (item, reviewer)
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class VoteError(ValueError):
    """A vote refused: `status` is the HTTP status the page answers with (400, 404, 409, 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class RoundClosed(VoteError):
    def __init__(self, message: str):
        super().__init__(message, status=409)


# ----------------------------------------------------------------------------- a vote, checked


def reviewer_name(value: Any) -> str:
    """A reviewer's name: 1-64 printable characters (surrounding spaces dropped)."""
    if not isinstance(value, str) or not value.strip():
        raise VoteError("`reviewer` must be a non-empty name")
    name = value.strip()
    if len(name) > MAX_REVIEWER_CHARS:
        raise VoteError(f"`reviewer` is longer than {MAX_REVIEWER_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise VoteError("`reviewer` holds control characters")
    return name


def _rating(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise VoteError(f"{where} must be an integer from 1 to 5 (or null), got {value!r}")
    return value


def parse_vote(payload: Any, order: Mapping[int, tuple[str, str]]) -> dict[str, Any]:
    """A vote request checked and turned into a row (without `voted_at`). `order` maps each item
    of the round to its (model shown as A, model shown as B); ratings come per side shown."""
    if not isinstance(payload, Mapping):
        raise VoteError("a vote is a JSON object: reviewer, item, choice, ratings, better_answer", 400)
    unknown = sorted(set(payload) - {"reviewer", "item", "choice", "ratings", "better_answer"})
    if unknown:
        raise VoteError(f"unknown field(s) {', '.join(map(str, unknown))}")
    reviewer = reviewer_name(payload.get("reviewer"))
    item = payload.get("item")
    if isinstance(item, bool) or not isinstance(item, int):
        raise VoteError(f"`item` must be an item number, got {item!r}")
    if item not in order:
        raise VoteError(f"no item {item} in this round (items 0 to {len(order) - 1})", 404)
    choice = payload.get("choice")
    if choice not in CHOICES:
        raise VoteError(f"`choice` must be one of A, B, tie, got {choice!r}")
    shown = dict(zip(("A", "B"), order[item], strict=True))
    row: dict[str, Any] = {"item": item, "reviewer": reviewer, "choice": choice}
    row["preferred"] = "tie" if choice == "tie" else shown[choice]
    ratings = payload.get("ratings") or {}
    if not isinstance(ratings, Mapping) or set(ratings) - {"A", "B"}:
        raise VoteError("`ratings` must be an object with A and/or B")
    for side, model in shown.items():
        given = ratings.get(side) or {}
        if not isinstance(given, Mapping) or set(given) - set(CRITERIA):
            raise VoteError(f"`ratings.{side}` must be an object with {', '.join(CRITERIA)}")
        for c in CRITERIA:
            row[f"{model}_{c}"] = _rating(given.get(c), f"`ratings.{side}.{c}`")
    better = payload.get("better_answer")
    if better is not None and not isinstance(better, str):
        raise VoteError("`better_answer` must be text (or null)")
    if better is not None and len(better) > MAX_ANSWER_CHARS:
        raise VoteError(f"`better_answer` is longer than {MAX_ANSWER_CHARS} characters")
    row["better_answer"] = better if better and better.strip() else None
    return row


# ----------------------------------------------------------------------------- the store


class VoteStore:
    """A round's `votes.sqlite`. Each method opens its own connection: one store may serve many
    threads (a web server's), and many processes may open the same file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> VoteStore:
        store = cls(path)
        with store._connect(create=True) as db:
            db.execute("PRAGMA journal_mode=WAL")  # recorded in the file: readers never block the writer
            db.executescript(_SCHEMA)
        return store

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.is_file():  # sqlite would make an empty one
            raise FileNotFoundError(f"{self.path}: no vote store (not a review round's folder?)")
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions: explicit
        try:
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the vote is acknowledged
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock, held until commit
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Store a vote (a `parse_vote` row), replacing this reviewer's earlier vote on the item;
        RoundClosed once the round is closed. Returns the row as stored."""
        stored = {**{c: row.get(c) for c in COLUMNS}, "voted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
        with self._writing() as db:
            if _state(db, "closed_at"):
                raise RoundClosed("this round is closed: its votes are published and no more are taken")
            db.execute(
                f"INSERT INTO votes ({names}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                f"ON CONFLICT (item, reviewer) DO UPDATE SET {updates}",
                [stored[c] for c in COLUMNS],
            )
        return stored

    def votes(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Every vote (or one reviewer's), by item then reviewer."""
        with self._connect() as db:
            where, args = ("WHERE reviewer = ?", [reviewer]) if reviewer is not None else ("", [])
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM votes {where} ORDER BY item, reviewer", args)
            return [dict(r) for r in rows]

    def close(self) -> tuple[str, list[dict[str, Any]]]:
        """Close the round (if it is not yet) and return (when it closed, every vote): read under
        the lock that closing takes, so no vote can land after them."""
        with self._writing() as db:
            closed_at = _state(db, "closed_at")
            if not closed_at:
                closed_at = datetime.now(UTC).isoformat(timespec="seconds")
                db.execute("INSERT INTO state (key, value) VALUES ('closed_at', ?)", [closed_at])
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM votes ORDER BY item, reviewer")
            return closed_at, [dict(r) for r in rows]

    def state(self, key: str) -> str | None:
        """`closed_at`, `artifact` (the fingerprint of the published votes)."""
        with self._connect() as db:
            return _state(db, key)

    def set_state(self, key: str, value: str) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                [key, value, value],
            )


def _state(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM state WHERE key = ?", [key]).fetchone()
    return row[0] if row else None
