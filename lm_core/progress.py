"""How long-running library code reports progress without knowing who listens.

`lm_core` stays free of any UI: a stage takes a `Progress` and calls `start` and `advance`;
the Prefect task layer passes one that drives a terminal bar and a Prefect progress artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    def start(self, total: int | None, unit: str) -> None:
        """A new phase of `total` units (None: unknown) begins."""

    def advance(self, n: int = 1) -> None:
        """`n` more units are done."""

    def describe(self, text: str) -> None:
        """A short live status beside the bar (e.g. loss and tokens/s)."""


class NullProgress:
    def start(self, total: int | None, unit: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


# `map_shards(fn, items, progress)` runs `fn` over per-shard work items and returns the results
# in the items' order, advancing `progress` by one as each item finishes. Stages take one so that
# the orchestration layer can fan shards out (a Prefect task per shard, on threads, processes,
# Dask or Ray); the default runs them here, one after another. `fn` and the items must be plain
# picklable values (top-level functions, paths, configs), never open files or models.
MapShards = Callable[[Callable[[T], R], Sequence[T], Progress], list[R]]


def serial_map(fn: Callable[[T], R], items: Sequence[T], progress: Progress = NullProgress()) -> list[R]:
    results = []
    for item in items:
        results.append(fn(item))
        progress.advance()
    return results


def thread_map(
    fn: Callable[[T], R], items: Sequence[T], progress: Progress = NullProgress(), workers: int | None = None
) -> list[R]:
    """A `MapShards` on a local thread pool (for notebooks and scripts; flows use Prefect's)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        for f in as_completed(futures):
            f.result()
            progress.advance()
        return [f.result() for f in futures]
