"""Chunk: split token documents into train/validation and pack them into fixed blocks."""

from lm_core.chunk.pack import TAIL_FILE, BlockPacker, join_documents, split_is_val
from lm_core.chunk.stage import CODE_VERSION, SPLITS, EmptySplitError, chunk_fingerprint, run_chunk

__all__ = [
    "CODE_VERSION",
    "SPLITS",
    "TAIL_FILE",
    "BlockPacker",
    "EmptySplitError",
    "chunk_fingerprint",
    "join_documents",
    "run_chunk",
    "split_is_val",
]
