"""The Arrow schemas of the data artifacts, in one place: what each stage writes and the next reads.

crawl/<fp>/docs/part-*.arrow       RAW_DOC       one fetched or read document, body as bytes
crawl/<fp>/failures/part-*.arrow   FAILURE       every failed or refused fetch, with the reason
clean/<fp>/docs/part-*.arrow       CLEAN_DOC     main text, repaired, filtered, scrubbed, deduplicated
clean/<fp>/rejected/part-*.arrow   REJECTED      every dropped document, with the reason
tokenize/<fp>/tokenizer.json                     byte-level BPE (HF tokenizers)
tokenize/<fp>/tokens/part-*.arrow  token_doc()   token ids of each clean document
chunk/<fp>/{train,val}/part-*.arrow  block()     fixed blocks of seq_len + 1 tokens
chunk/<fp>/{train,val}/tail.arrow    tail()      the tokens after the last whole block
"""

from __future__ import annotations

import pyarrow as pa

RAW_DOC = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),  # http(s) URL, file path, warc record URI, or hf id
        pa.field("source", pa.string(), nullable=False),  # urls | pydoc | warc | files | hf_dataset
        pa.field("fetched_at", pa.timestamp("ms", tz="UTC")),
        pa.field("status", pa.int32()),  # HTTP status; null for files and datasets
        pa.field("content_type", pa.string()),  # media type without parameters: text/html, text/plain, ...
        pa.field("declared_encoding", pa.string()),  # from the header, meta tag or BOM; null if none
        pa.field("detected_encoding", pa.string()),  # charset_normalizer's guess; null if not needed
        pa.field("body", pa.binary(), nullable=False),  # the bytes as fetched (never decoded here)
    ]
)

FAILURE = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # a short, stable category (see lm_core.crawl)
        pa.field("detail", pa.string()),  # human-readable specifics
        pa.field("status", pa.int32()),
        pa.field("at", pa.timestamp("ms", tz="UTC")),
    ]
)

CLEAN_DOC = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # hex hash of the text: stable across runs
        pa.field("url", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("n_words", pa.int32(), nullable=False),
        pa.field("n_bytes", pa.int64(), nullable=False),  # UTF-8 bytes of text (bits-per-byte needs them)
    ]
)

REJECTED = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # the rule that dropped it, e.g. min_words
        pa.field("detail", pa.string()),  # the measured value and threshold, or the duplicate's id
        pa.field("text", pa.string()),  # what the rule saw (null if no text could be extracted)
    ]
)


def token_dtype(vocab_size: int) -> pa.DataType:
    return pa.uint16() if vocab_size <= 2**16 else pa.uint32()


def token_doc(vocab_size: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),  # the clean document's id
            pa.field("tokens", pa.list_(token_dtype(vocab_size)), nullable=False),
            pa.field("n_bytes", pa.int64(), nullable=False),
        ]
    )


def block(vocab_size: int, seq_len: int) -> pa.Schema:
    return pa.schema([pa.field("tokens", pa.list_(token_dtype(vocab_size), seq_len + 1), nullable=False)])


def tail(vocab_size: int) -> pa.Schema:
    return pa.schema([pa.field("tokens", pa.list_(token_dtype(vocab_size)), nullable=False)])
