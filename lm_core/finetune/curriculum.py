"""Curriculum: present training examples from easy to hard (Bengio et al., 2009).

"Easy" is measured by a score per example, lowest first: its length in tokens, or the loss a
teacher (or the starting model) gives it. Equal scores keep their input order, so the same data
always yields the same order (and a resumed run sees the same sequence).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

CurriculumMode = Literal["none", "length", "teacher_loss"]
MODES = ("none", "length", "teacher_loss")


def _ascending(scores: Sequence[float]) -> list[int]:
    """Indices by ascending score; ties by index (Python's sort is stable)."""
    bad = [i for i, s in enumerate(scores) if isinstance(s, float) and math.isnan(s)]
    if bad:
        raise ValueError(f"curriculum scores must be numbers; example(s) {bad[:5]} have NaN")
    return sorted(range(len(scores)), key=lambda i: scores[i])


def order_by_length(examples: Sequence[Any], key: Callable[[Any], int] = len) -> list[int]:
    """Indices of `examples`, shortest first; `key` gives an example's length (e.g. its tokens)."""
    return _ascending([key(e) for e in examples])


def order_by_teacher_loss(scores: Sequence[float]) -> list[int]:
    """Indices, lowest teacher loss (most predictable example) first."""
    return _ascending([float(s) for s in scores])


def curriculum_order(scores: Sequence[float], mode: CurriculumMode = "none") -> list[int]:
    """The order to train in: "none" keeps the input order; "length" and "teacher_loss" sort by
    `scores` (lengths or teacher losses, one per example) ascending, ties by position."""
    if mode == "none":
        return list(range(len(scores)))
    if mode == "length":
        return _ascending(list(scores))
    if mode == "teacher_loss":
        return order_by_teacher_loss(scores)
    raise ValueError(f"unknown curriculum mode {mode!r}; choose one of {', '.join(MODES)}")
