"""Encoding one clean shard into one token shard: the per-shard work of the tokenize stage.

`encode_shard` is a top-level function over a small picklable `EncodeJob`, so the stage's
`map_shards` may run it on threads, Dask or Ray. It stays close to raw `encode_batch` speed by
never building per-row Python lists for Arrow: token ids go straight from the encodings into
one flat numpy array, and each batch's list column is made from offsets + values.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from lm_core.schemas import CLEAN_DOC, token_doc
from lm_core.shards import read_shard, write_shard
from lm_core.tokenize.bpe import load_tokenizer, vocab_size


@dataclass(frozen=True)
class EncodeJob:
    tokenizer: str  # path of tokenizer.json
    source: str  # a clean docs shard
    target: str  # the token shard to write
    batch_size: int  # documents per encode_batch call


@dataclass(frozen=True)
class EncodeResult:
    rows: int
    tokens: int
    bytes: int
    seconds: float


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, mtime_ns: int, size: int) -> Tokenizer:
    """One loaded tokenizer per file and worker process, shared by its threads (encoding only
    reads it). Modification time and size in the key make a replaced file load afresh."""
    return load_tokenizer(path)


def cached_tokenizer(path: str) -> Tokenizer:
    st = os.stat(path)
    return _tokenizer(path, st.st_mtime_ns, st.st_size)


def encode_texts(tok: Tokenizer, texts: list[str], dtype: np.dtype) -> pa.ListArray:
    """Token ids of each text as an Arrow list array (offsets + one flat values buffer)."""
    # Longest first: encode_batch spreads the texts over its threads, and a long text taken up
    # last would leave the other threads idle while it finishes. The order is restored after.
    longest_first = np.argsort(-np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), kind="stable")
    # The _fast variant skips character offsets, which nothing here needs.
    encoded = tok.encode_batch_fast([texts[i] for i in longest_first], add_special_tokens=False)
    encodings = [None] * len(texts)
    for position, i in enumerate(longest_first.tolist()):
        encodings[i] = encoded[position]
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    offsets = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"{offsets[-1]} tokens in one batch overflow an Arrow list: lower tokenize.batch_size")
    ids = itertools.chain.from_iterable(e.ids for e in encodings)
    values = np.fromiter(ids, dtype=dtype, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def encode_shard(job: EncodeJob) -> EncodeResult:
    started = time.perf_counter()
    tok = cached_tokenizer(job.tokenizer)
    schema = token_doc(vocab_size(tok))
    dtype = np.dtype(schema.field("tokens").type.value_type.to_pandas_dtype())
    docs = read_shard(job.source, CLEAN_DOC)
    batches, tokens, n_bytes = [], 0, 0
    for start in range(0, docs.num_rows, job.batch_size):
        ids = docs.column("id").slice(start, job.batch_size).combine_chunks()
        texts = docs.column("text").slice(start, job.batch_size).combine_chunks()
        token_lists = encode_texts(tok, texts.to_pylist(), dtype)
        text_bytes = pc.binary_length(texts).cast(pa.int64())
        batches.append(pa.RecordBatch.from_arrays([ids, token_lists, text_bytes], schema=schema))
        tokens += len(token_lists.values)
        n_bytes += pc.sum(text_bytes).as_py() or 0
    write_shard(Path(job.target), pa.Table.from_batches(batches, schema=schema))
    return EncodeResult(docs.num_rows, tokens, n_bytes, time.perf_counter() - started)
