"""How long-running library code reports progress without knowing who listens.

`lm_core` stays free of any UI: a stage takes a `Progress` and calls `start` and `advance`;
the Prefect task layer passes one that drives a terminal bar and a Prefect progress artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    def start(self, total: int | None, unit: str) -> None:
        """A new phase of `total` units (None: unknown) begins."""

    def advance(self, n: int = 1) -> None:
        """`n` more units are done."""


class NullProgress:
    def start(self, total: int | None, unit: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


# Runs `fn` over per-shard work items and returns the results in the items' order. Stages take
# one so that the orchestration layer can fan shards out (a Prefect task per shard, on threads,
# Dask or Ray); the default runs them here, one after another. `fn` and the items must be
# plain picklable values (top-level functions, paths, configs), never open files or models.
MapShards = Callable[[Callable[[T], R], Sequence[T]], list[R]]


def serial_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]
