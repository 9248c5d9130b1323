"""Chunk: split token documents into train/validation, cut from training what evaluation sets
hold, and pack them into fixed blocks."""

from lm_core.chunk.decontaminate import VALIDATION, Decontaminator, evaluation_texts
from lm_core.chunk.pack import TAIL_FILE, BlockPacker, GroupPacker, document_groups, join_documents, split_is_val
from lm_core.chunk.stage import CODE_VERSION, SPLITS, EmptySplitError, chunk_fingerprint, chunk_inputs, run_chunk

__all__ = [
    "CODE_VERSION",
    "SPLITS",
    "TAIL_FILE",
    "VALIDATION",
    "BlockPacker",
    "Decontaminator",
    "EmptySplitError",
    "GroupPacker",
    "chunk_fingerprint",
    "chunk_inputs",
    "document_groups",
    "evaluation_texts",
    "join_documents",
    "run_chunk",
    "split_is_val",
]
