"""Packing token streams into fixed training blocks, with numpy (no per-token Python).

split_is_val     which documents are held out, by a salted hash of their ids
join_documents   the chosen documents' tokens, each followed by <|endoftext|>, as one array
BlockPacker      cuts a split's stream into blocks of seq_len + 1 tokens and writes them
                 as shards; the tokens after the last whole block become its tail
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from lm_core.schemas import block, tail
from lm_core.shards import shard_name, write_shard

TAIL_FILE = "tail.arrow"


def split_is_val(doc_ids: Sequence[str], salt: str, val_fraction: float) -> np.ndarray:
    """True for the documents held out for validation. A document's side depends only on its id
    and the salt, never on which shard it sits in or in what order the shards come."""
    if val_fraction <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    prefix = salt.encode() + b"\0"
    hashes = np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + i.encode(), digest_size=8).digest(), "big") for i in doc_ids),
        dtype=np.uint64,
        count=len(doc_ids),
    )
    return hashes < np.uint64(int(val_fraction * 2**64))


def join_documents(offsets: np.ndarray, values: np.ndarray, chosen: np.ndarray, eot: int) -> np.ndarray:
    """The tokens of the chosen documents, in order, each followed by the end-of-text id.

    `offsets` (n + 1) and `values` are an Arrow list column's buffers: document i is
    values[offsets[i]:offsets[i + 1]]; `chosen` is a boolean mask over the n documents."""
    lengths = np.diff(offsets)
    kept_tokens = values[np.repeat(chosen, lengths)]
    kept_lengths = lengths[chosen]
    out = np.empty(len(kept_tokens) + len(kept_lengths), dtype=values.dtype)
    ends = np.cumsum(kept_lengths + 1) - 1  # where each document's end-of-text goes
    is_token = np.ones(len(out), dtype=bool)
    is_token[ends] = False
    out[is_token] = kept_tokens
    out[ends] = eot
    return out


class BlockPacker:
    """Takes a split's token stream piece by piece and writes `<folder>/part-*.arrow` shards of
    `blocks_per_shard` blocks of `seq_len + 1` tokens, no padding; on `close`, the last shard
    and `<folder>/tail.arrow` (one row: the tokens after the last whole block)."""

    def __init__(self, folder: Path, seq_len: int, blocks_per_shard: int, vocab_size: int):
        self.folder = Path(folder)
        self.block_len = seq_len + 1
        self.blocks_per_shard = blocks_per_shard
        self.block_schema = block(vocab_size, seq_len)
        self.tail_schema = tail(vocab_size)
        self.dtype = np.dtype(self.tail_schema.field("tokens").type.value_type.to_pandas_dtype())
        self.shards = 0
        self.blocks = 0
        self.tail_tokens = 0
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0

    def add(self, tokens: np.ndarray) -> None:
        if len(tokens) == 0:
            return
        self._pending.append(tokens.astype(self.dtype, copy=False))
        self._pending_tokens += len(tokens)
        shard_tokens = self.blocks_per_shard * self.block_len
        if self._pending_tokens >= shard_tokens:
            stream = np.concatenate(self._pending)
            whole = len(stream) // shard_tokens * shard_tokens
            for start in range(0, whole, shard_tokens):
                self._write_blocks(stream[start : start + shard_tokens])
            self._pending = [stream[whole:]]
            self._pending_tokens = len(stream) - whole

    def close(self) -> None:
        stream = np.concatenate(self._pending) if self._pending else np.empty(0, dtype=self.dtype)
        whole = len(stream) // self.block_len * self.block_len
        if whole:
            self._write_blocks(stream[:whole])
        rest = stream[whole:]
        self.folder.mkdir(parents=True, exist_ok=True)
        offsets = pa.array(np.array([0, len(rest)], dtype=np.int32))
        write_shard(
            self.folder / TAIL_FILE,
            pa.Table.from_arrays([pa.ListArray.from_arrays(offsets, pa.array(rest))], schema=self.tail_schema),
        )
        self.tail_tokens = len(rest)
        self._pending, self._pending_tokens = [], 0

    def _write_blocks(self, flat: np.ndarray) -> None:
        blocks = pa.FixedSizeListArray.from_arrays(pa.array(flat), self.block_len)
        write_shard(self.folder / shard_name(self.shards), pa.Table.from_arrays([blocks], schema=self.block_schema))
        self.shards += 1
        self.blocks += len(blocks)
