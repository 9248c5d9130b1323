"""Packing token documents into fixed training blocks, with numpy (no per-token Python).

split_is_val     which documents are held out, by a salted hash of their ids
join_documents   the chosen documents' tokens, each followed by <|endoftext|>, as one array
document_groups  the packing order: documents by a hash of their id, cut into groups at
                 documents chosen by that hash too (content-defined, like rsync's chunks)
BlockPacker      cuts a token stream into blocks of seq_len + 1 tokens and writes them as
                 shards; the tokens after the last whole block become its tail
GroupPacker      packs each group on its own, so that a changed document moves only the
                 blocks of its group; the groups' leftovers are packed together after them
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


def _hashes(doc_ids: Sequence[str], prefix: bytes, size: int) -> np.ndarray:
    """`size` 64-bit words of blake2b(prefix + id) per document, as a (len, size) uint64 array."""
    raw = b"".join(hashlib.blake2b(prefix + i.encode(), digest_size=8 * size).digest() for i in doc_ids)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(doc_ids), size)


def split_is_val(doc_ids: Sequence[str], salt: str, val_fraction: float) -> np.ndarray:
    """True for the documents held out for validation. A document's side depends only on its id
    and the salt, never on which shard it sits in or in what order the shards come."""
    if val_fraction <= 0 or not len(doc_ids):
        return np.zeros(len(doc_ids), dtype=bool)
    return _hashes(doc_ids, salt.encode() + b"\0", 1)[:, 0] < np.uint64(int(val_fraction * 2**64))


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


def document_groups(doc_ids: Sequence[str], lengths: np.ndarray, group_tokens: int) -> list[np.ndarray]:
    """The documents (indices into `doc_ids`) in packing order, cut into groups.

    The order is by a hash of the id, so it does not depend on shards, and a new or changed
    document (a new id) lands at one place without moving the others. A group ends after a
    document whose own hash falls below (its tokens + 1) / group_tokens: about one boundary
    every `group_tokens` tokens, decided by each document alone, so a document added or removed
    changes only the group it falls in (and the next one, when it ends a group)."""
    if not len(doc_ids):
        return []
    h = _hashes(doc_ids, b"lmforge-pack-order\0", 2)
    order = np.lexsort((h[:, 1], h[:, 0]))
    draw = h[order, 1].astype(np.float64) / 2.0**64
    ends = np.flatnonzero(draw * group_tokens < np.asarray(lengths)[order] + 1) + 1
    return [g for g in np.split(order, ends) if len(g)]


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


class GroupPacker:
    """Packs each group's stream from a block boundary: its whole blocks are the same whatever
    the other groups hold. What is left of each group (less than a block) goes to a leftover
    stream, whose blocks are written as soon as they fill; its last partial block is the tail.
    So every token is still kept exactly once, and no more is lost to tails than before."""

    def __init__(self, packer: BlockPacker):
        self.packer = packer
        self.groups = 0
        self.leftover_blocks = 0
        self._rest = np.empty(0, dtype=packer.dtype)

    def add(self, stream: np.ndarray) -> None:
        n = self.packer.block_len
        whole = len(stream) // n * n
        self.packer.add(stream[:whole])
        self._rest = np.concatenate([self._rest, stream[whole:].astype(self.packer.dtype, copy=False)])
        full = len(self._rest) // n * n
        if full:
            self.packer.add(self._rest[:full])  # only whole blocks reach the packer until close
            self._rest = self._rest[full:]
            self.leftover_blocks += full // n
        self.groups += 1

    def close(self) -> None:
        self.packer.add(self._rest)
        self.packer.close()
