"""A review round read back from its folder (light: no torch; `lm_core.review.make` makes one):
the challenger's and the champion's answers to the same prompts, generated once, shown to
reviewers side by side in an order each item keeps.

    <workspace>/review/<round-id>/
        round.json     the two models (spec, stage, fingerprint), where the prompts came from, the
                       generation settings, and the items: prompt, both answers, blind order
        votes.sqlite   the votes (`lm_core.review.votes`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_core.review.votes import VoteStore
from lm_core.tokenize.chat_template import Message

ROUNDS_DIR = "review"
ROUND_FILE = "round.json"
VOTES_FILE = "votes.sqlite"


class ReviewError(ValueError):
    """A round that cannot be made or found; the message names it and what exists."""


@dataclass(frozen=True)
class Item:
    id: int
    prompt: tuple[Message, ...]
    answers: dict[str, str]  # model (challenger, champion) -> its answer
    order: tuple[str, str]  # the model shown as A, the model shown as B

    @property
    def shown(self) -> dict[str, str]:
        """side (A, B) -> the answer shown there."""
        return {side: self.answers[model] for side, model in zip(("A", "B"), self.order, strict=True)}


class Round:
    """A round read back from its folder."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        path = self.dir / ROUND_FILE
        try:
            self.meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            self.items = [
                Item(
                    i["id"],
                    tuple(Message(m["role"], m["content"]) for m in i["prompt"]),
                    dict(i["answers"]),
                    tuple(i["order"]),
                )
                for i in self.meta["items"]
            ]
        except FileNotFoundError:
            raise ReviewError(f"{self.dir} is not a review round (no {ROUND_FILE})") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ReviewError(f"{path} is corrupt: {e}") from None
        self.store = VoteStore(self.dir / VOTES_FILE)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def order(self) -> dict[int, tuple[str, str]]:
        return {item.id: item.order for item in self.items}

    @property
    def closed_at(self) -> str | None:
        return self.store.state("closed_at")

    def __len__(self) -> int:
        return len(self.items)


def rounds(ws_root: str | Path) -> list[Round]:
    """The workspace's rounds, newest first."""
    folder = Path(ws_root) / ROUNDS_DIR
    if not folder.is_dir():
        return []
    made = [d for d in folder.iterdir() if not d.name.startswith(".") and (d / ROUND_FILE).is_file()]  # not .partial-*
    return sorted(map(Round, made), key=lambda r: r.meta.get("created", ""), reverse=True)


def find_round(ws_root: str | Path, round_id: str | None = None, open_only: bool = False) -> Round:
    """The round `round_id` names (its id, a prefix of it, or its folder); None: the newest
    (open, with `open_only`)."""
    if round_id and Path(round_id).expanduser().is_dir() and (Path(round_id).expanduser() / ROUND_FILE).is_file():
        return Round(Path(round_id).expanduser())
    known = rounds(ws_root)
    if round_id is None:
        candidates = [r for r in known if not (open_only and r.closed_at)]
        if not candidates:
            what = "open review round" if open_only and known else "review round"
            raise ReviewError(f"no {what} in {Path(ws_root).resolve()}: make one with `lmforge review new`")
        return candidates[0]
    matches = [r for r in known if r.id == round_id] or [r for r in known if r.id.startswith(round_id)]
    if len(matches) != 1:
        listing = ", ".join(r.id for r in known) or "none"
        what = "more than one" if matches else "no"
        raise ReviewError(f"{what} review round matches {round_id!r}; rounds: {listing}")
    return matches[0]
