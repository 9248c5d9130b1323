"""The tokenize stage: clean documents -> a tokenizer + the token ids of every document.

tokenize/<fp>/tokenizer.json          trained here, reused from an earlier snapshot, or a copy of `tokenize.path`
tokenize/<fp>/tokens/part-*.arrow     token_doc schema, one shard per clean shard, same order

A refresh crawls the same sources again as a new snapshot; retraining on it would move every
token id (and so every block boundary after the first change) for a page or two that changed.
So the tokenizer that the latest earlier snapshot of the same sources was tokenized with, under
the same settings, is reused (`earlier_tokenizer`): its SHA-256 enters the fingerprint, and the
manifest names the artifact it came from (`inputs.tokenizer`). `tokenize.retrain: true` trains
anew.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_core.config import Config, TokenizeConfig
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
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint

if TYPE_CHECKING:
    from lm_core.stages import Inputs, StageRun

log = logging.getLogger(__name__)

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


def _settings(cfg: TokenizeConfig) -> dict[str, Any]:
    """The settings a trained tokenizer follows from (`retrain` says whether to train, not how)."""
    return {k: v for k, v in cfg.fingerprint_fields().items() if k != "retrain"}


@dataclass(frozen=True)
class ReusedTokenizer:
    """A tokenizer trained on an earlier snapshot, to be reused."""

    artifact: str  # the tokenize artifact it is copied from
    path: Path
    sha256: str


def earlier_tokenizer(cfg: TokenizeConfig, clean: ArtifactRef) -> ReusedTokenizer | None:
    """The tokenizer that the latest crawl snapshot of the same sources before `clean`'s own was
    tokenized with, under these settings; None if there is none.

    The lineage is read from manifests: tokenize <- clean <- crawl, and a crawl config's snapshots
    share `_unlabelled_fingerprint`. Only earlier snapshots count, so the answer for a clean
    artifact does not change once it is tokenized. A tokenizer file that fails its recorded
    SHA-256 or does not load is passed over."""
    from lm_core.crawl.stage import _unlabelled_fingerprint  # the crawler's modules, only when needed

    ws = Workspace(clean.dir.parent.parent)
    crawls = {a["fingerprint"]: a["manifest"] for a in ws.artifacts("crawl")}
    cleans = {a["fingerprint"]: a["manifest"] for a in ws.artifacts("clean")}

    def crawl_of(clean_fp: str | None) -> dict | None:
        return crawls.get(cleans.get(clean_fp, {}).get("inputs", {}).get("crawl"))

    ours = crawl_of(clean.fingerprint)
    if ours is None:
        return None
    sources, settings = _unlabelled_fingerprint(ours), _settings(cfg)
    earlier = []
    for a in ws.artifacts(STAGE):  # newest first
        theirs, config = crawl_of(a["manifest"].get("inputs", {}).get("clean")), a["manifest"].get("config", {})
        if (
            theirs is not None
            and theirs.get("created", "") < ours.get("created", "")
            and _unlabelled_fingerprint(theirs) == sources
            and all(config.get(k) == v for k, v in settings.items())
        ):
            earlier.append((theirs.get("created", ""), a))
    for _, a in sorted(earlier, key=lambda e: e[0], reverse=True):  # the latest snapshot first
        path = Path(a["path"]) / TOKENIZER_FILE
        try:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if a["manifest"].get("stats", {}).get("tokenizer_sha256", sha) != sha:
                raise TokenizerError(f"{path} does not match the SHA-256 its manifest records")
            load_tokenizer(path)
        except (OSError, TokenizerError) as e:
            log.warning("not reusing the tokenizer of %s: %s", a["path"], e)
            continue
        return ReusedTokenizer(a["fingerprint"], path, sha)
    return None


def _decisive_config(cfg: TokenizeConfig, clean: ArtifactRef) -> tuple[dict[str, Any], ReusedTokenizer | None]:
    """What decides the output, and the earlier tokenizer reused if any: when a tokenizer is given,
    only its content (so moving or renaming the file changes nothing, editing it does); else the
    training settings, plus the content of the tokenizer reused from an earlier snapshot."""
    if cfg.path is not None:
        return {"tokenizer_sha256": _file_sha256(cfg.path)}, None
    reused = None if cfg.retrain else earlier_tokenizer(cfg, clean)
    if reused is None:
        return _settings(cfg), None
    return {**_settings(cfg), "tokenizer_sha256": reused.sha256}, reused


def tokenize_fingerprint(cfg: TokenizeConfig, clean: ArtifactRef) -> str:
    return _key(cfg, clean).fingerprint


def _corpus_texts(shards: Sequence[Path], progress: Progress = NullProgress()) -> Iterator[str]:
    """Every document's text, shard by shard, one record batch in memory at a time."""
    for path in shards:
        for batch in read_shard(path, CLEAN_DOC).select(["text"]).to_batches():
            yield from batch.column(0).to_pylist()
        progress.advance(1)


def _count_documents(shards: Sequence[Path]) -> int:
    return sum(read_shard(p, CLEAN_DOC).num_rows for p in shards)


def tokenize_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    return _key(cfg.tokenize, inputs["clean"])


def _key(cfg: TokenizeConfig, clean: ArtifactRef) -> StageKey:
    decisive, reused = _decisive_config(cfg, clean)
    inputs = {"clean": clean.fingerprint} | ({"tokenizer": reused.artifact} if reused else {})  # where it came from
    return StageKey(
        stage=STAGE,
        fingerprint=fingerprint(STAGE, decisive, {"clean": clean.fingerprint}, CODE_VERSION),
        config=cfg.model_dump(mode="json") | decisive,
        inputs=inputs,
    )


def _reused(key: StageKey, clean: ArtifactRef) -> ReusedTokenizer | None:
    """The earlier tokenizer `key` was computed with, if any."""
    if "tokenizer" not in key.inputs:
        return None
    folder = Workspace(clean.dir.parent.parent).artifact_dir(STAGE, key.inputs["tokenizer"])
    return ReusedTokenizer(key.inputs["tokenizer"], folder / TOKENIZER_FILE, key.config["tokenizer_sha256"])


def tokenize_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_tokenize(cfg.tokenize, inputs["clean"], ws, run.map_shards, run.progress, key=key)


def run_tokenize(
    cfg: TokenizeConfig,
    clean: ArtifactRef,
    ws: Workspace,
    map_shards: MapShards = serial_map,
    progress: Progress = NullProgress(),
    key: StageKey | None = None,
) -> ArtifactRef:
    """Tokenize a clean artifact. `key`: computed already (`tokenize_key`)."""
    if cfg.path is not None:
        load_tokenizer(cfg.path)  # a bad tokenizer file fails here, named, before any work
    key = key or _key(cfg, clean)
    fp, reused = key.fingerprint, _reused(key, clean)
    with ws.build(STAGE, fp, config=key.config, inputs=key.inputs) as build:
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
        elif reused is not None:
            data = reused.path.read_bytes()
            if hashlib.sha256(data).hexdigest() != reused.sha256:
                raise TokenizerError(f"{reused.path} changed while it was being reused: run the stage again")
            tokenizer_path.write_bytes(data)
            tok = load_tokenizer(tokenizer_path)
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
            "tokenizer": "given" if cfg.path is not None else "reused" if reused is not None else "trained",
            "tokenizer_sha256": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
            "train_seconds": round(train_seconds, 3),
            "encode_seconds": round(encode_seconds, 3),
            "tokens_per_second": round(tokens / encode_seconds) if encode_seconds > 0 else None,
        }
    return build.ref
