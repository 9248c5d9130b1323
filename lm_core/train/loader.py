"""Batches of token blocks from the chunk stage's Arrow shards.

Shards are memory-mapped: the loader holds numpy views of the mapped files, never a copy of
the corpus. Each epoch visits every block once in an order drawn from (seed, epoch); a
distributed rank takes every world_size-th block of that order, so ranks never overlap. The
loader's position (epoch, blocks consumed) is saved in checkpoints: a resumed run sees exactly
the batches it would have seen. A background thread prepares the next batches so the training
step does not wait on data.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from lm_core.shards import CorruptShardError, read_shard, shard_paths


class BlockStore:
    """All whole blocks of one split, addressable by a global index, without copying them."""

    def __init__(self, split_dir: str | Path):
        self.split_dir = Path(split_dir)
        self.parts: list[np.ndarray] = []  # (n_blocks, seq_len + 1) views into mapped files
        for path in shard_paths(self.split_dir):
            table = read_shard(path)
            if "tokens" not in table.schema.names or not pa.types.is_fixed_size_list(table.schema.field("tokens").type):
                raise CorruptShardError(f"shard {path} holds no fixed-size token blocks")
            width = table.schema.field("tokens").type.list_size
            for chunk in table.column("tokens").chunks:
                if len(chunk):
                    flat = chunk.values.to_numpy(zero_copy_only=True)[chunk.offset * width :][: len(chunk) * width]
                    self.parts.append(flat.reshape(len(chunk), width))
        self.block_len = self.parts[0].shape[1] if self.parts else 0
        if any(p.shape[1] != self.block_len for p in self.parts):
            raise CorruptShardError(f"{self.split_dir}: shards hold blocks of different lengths")
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """The blocks at `indices`, as one (len, block_len) int64 array."""
        out = np.empty((len(indices), self.block_len), dtype=np.int64)
        part_of = np.searchsorted(self.starts, indices, side="right") - 1
        for i, (p, idx) in enumerate(zip(part_of, indices, strict=True)):
            out[i] = self.parts[p][idx - self.starts[p]]
        return out


@dataclass
class LoaderState:
    epoch: int = 0
    consumed: int = 0  # blocks of this rank's share of the epoch already handed out

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}


class TrainLoader:
    """Endless shuffled micro-batches (x, y) of `batch_size` blocks for one rank."""

    def __init__(
        self,
        split_dir: str | Path,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        prefetch: int = 4,
        state: dict | None = None,
    ):
        self.store = BlockStore(split_dir)
        self.per_rank = len(self.store) // world_size
        if self.per_rank < batch_size:
            raise ValueError(
                f"{split_dir} has {len(self.store)} blocks: too few for micro-batches of {batch_size} "
                f"on {world_size} rank(s); lower train.micro_batch or add data"
            )
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.device = torch.device(device)
        self.state = LoaderState(**(state or {}))
        self.wait_seconds = 0.0  # time the training loop spent waiting on this loader
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(LoaderState(**self.state.to_dict()),), daemon=True)
        self._thread.start()

    def _order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.store))
        return perm[self.rank :: self.world_size][: self.per_rank]

    def _produce(self, pos: LoaderState) -> None:
        try:
            order = self._order(pos.epoch)
            while not self._stop.is_set():
                if pos.consumed + self.batch_size > self.per_rank:  # drop the ragged end of an epoch
                    pos = LoaderState(pos.epoch + 1, 0)
                    order = self._order(pos.epoch)
                blocks = torch.from_numpy(self.store.gather(order[pos.consumed : pos.consumed + self.batch_size]))
                if self.device.type == "cuda":
                    blocks = blocks.pin_memory()
                pos = LoaderState(pos.epoch, pos.consumed + self.batch_size)
                self._put((blocks, pos))
        except Exception as e:  # surfaced to the training loop on its next batch
            self._put((e, None))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        blocks, pos = self._queue.get()
        self.wait_seconds += time.perf_counter() - t0
        if isinstance(blocks, Exception):
            raise blocks
        self.state = pos  # the position *after* this batch: what a checkpoint must record
        blocks = blocks.to(self.device, non_blocking=True)
        return blocks[:, :-1], blocks[:, 1:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def eval_batches(
    split_dir: str | Path, batch_size: int, max_batches: int | None = None, rank: int = 0, world_size: int = 1
):
    """The validation blocks in a fixed order (each rank a disjoint share), in micro-batches; the
    last one may be smaller."""
    store = BlockStore(split_dir)
    indices = np.arange(len(store))[rank::world_size]
    starts = range(0, len(indices), batch_size)
    for b, start in enumerate(starts):
        if max_batches is not None and b >= max_batches:
            return
        blocks = torch.from_numpy(store.gather(indices[start : start + batch_size]))
        yield blocks[:, :-1], blocks[:, 1:]
