"""The tokenize stage: clean documents -> a tokenizer + the token ids of every document.

tokenize/<fp>/tokenizer.json          trained here, or a copy of `tokenize.path`
tokenize/<fp>/tokens/part-*.arrow     token_doc schema, one shard per clean shard, same order
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lm_core.config import TokenizeConfig
from lm_core.progress import MapShards, NullProgress, Progress, serial_map
from lm_core.schemas import CLEAN_DOC
from lm_core.shards import read_shard, shard_name, shard_paths
from lm_core.tokenize.bpe import (
    TokenizerError,
    capped,
    load_tokenizer,
    special_token_ids,
    train_tokenizer,
    vocab_size,
)
from lm_core.tokenize.encode import EncodeJob, EncodeResult, encode_shard
from lm_core.workspace import ArtifactRef, Workspace, fingerprint

STAGE = "tokenize"
CODE_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
TOKENS_DIR = "tokens"


class EmptyCorpusError(ValueError):
    """The input holds no documents: there is nothing to train on or to encode."""


def _file_sha256(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"tokenize.path: tokenizer file {p} does not exist")
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _decisive_config(cfg: TokenizeConfig) -> dict[str, Any]:
    """What decides the output: the training settings, or, when a tokenizer is given, only its
    content (so moving or renaming the file changes nothing, editing it does)."""
    if cfg.path is None:
        return cfg.fingerprint_fields()
    return {"tokenizer_sha256": _file_sha256(cfg.path)}


def tokenize_fingerprint(cfg: TokenizeConfig, clean: ArtifactRef) -> str:
    return fingerprint(STAGE, _decisive_config(cfg), {"clean": clean.fingerprint}, CODE_VERSION)


def _corpus_texts(shards: Sequence[Path], progress: Progress = NullProgress()) -> Iterator[str]:
    """Every document's text, shard by shard, one record batch in memory at a time."""
    for path in shards:
        for batch in read_shard(path, CLEAN_DOC).select(["text"]).to_batches():
            yield from batch.column(0).to_pylist()
        progress.advance(1)


def _count_documents(shards: Sequence[Path]) -> int:
    return sum(read_shard(p, CLEAN_DOC).num_rows for p in shards)


def run_tokenize(
    cfg: TokenizeConfig,
    clean: ArtifactRef,
    ws: Workspace,
    map_shards: MapShards = serial_map,
    progress: Progress = NullProgress(),
) -> ArtifactRef:
    if cfg.path is not None:
        load_tokenizer(cfg.path)  # a bad tokenizer file fails here, named, before any work
    fp = tokenize_fingerprint(cfg, clean)
    manifest_config = cfg.model_dump(mode="json") | _decisive_config(cfg)
    with ws.build(STAGE, fp, config=manifest_config, inputs={"clean": clean.fingerprint}) as build:
        if build.published:
            return build.ref
        sources = shard_paths(clean.dir / "docs")
        n_docs = _count_documents(sources)
        if n_docs == 0:
            raise EmptyCorpusError(
                f"the clean artifact {clean.dir} holds no documents (in {len(sources)} shards): "
                "nothing to tokenize. Check the crawl's sources and the clean stage's rejections."
            )

        started = time.perf_counter()
        tokenizer_path = build.dir / TOKENIZER_FILE
        if cfg.path is not None:
            shutil.copyfile(cfg.path, tokenizer_path)
            tok = load_tokenizer(tokenizer_path)  # what the shards are encoded with: the copy
        else:
            # Training stops reading at max_train_chars: its bar may stop short of the total.
            progress.start(len(sources), "shards read to train the tokenizer")
            texts = capped(_corpus_texts(sources, progress), cfg.max_train_chars)
            tok = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
            tok.save(str(tokenizer_path))
        train_seconds = time.perf_counter() - started

        started = time.perf_counter()
        (build.dir / TOKENS_DIR).mkdir()
        jobs = [
            EncodeJob(str(tokenizer_path), str(src), str(build.dir / TOKENS_DIR / shard_name(i)), cfg.batch_size)
            for i, src in enumerate(sources)
        ]
        progress.start(len(jobs), "shards encoded")
        results: list[EncodeResult] = map_shards(encode_shard, jobs, progress)
        encode_seconds = time.perf_counter() - started

        tokens = sum(r.tokens for r in results)
        n_bytes = sum(r.bytes for r in results)
        build.stats = {
            "rows": sum(r.rows for r in results),
            "shards": len(results),
            "tokens": tokens,
            "bytes": n_bytes,
            "vocab_size": vocab_size(tok),
            "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
            "special_tokens": special_token_ids(tok),
            "tokenizer": "given" if cfg.path is not None else "trained",
            "train_seconds": round(train_seconds, 3),
            "encode_seconds": round(encode_seconds, 3),
            "tokens_per_second": round(tokens / encode_seconds) if encode_seconds > 0 else None,
        }
    return build.ref
