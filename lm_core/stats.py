"""The stats stage: a chunk artifact's corpus statistics.

    stats/<fp>/stats.json             per split: documents, tokens, blocks, document lengths
    stats/<fp>/top_tokens.csv         the commonest tokens: rank, id, text, count, share of all tokens
    stats/<fp>/length_histogram.csv   per split: documents by length in tokens, in power-of-two bins

Tokens are counted in the blocks, as training sees them (decontaminated, an end-of-text after
each document); document lengths in the tokenize artifact the chunk was cut from (its second
input, found upstream of the chunk), split as the chunk split them. Blocks are read a shard at a
time and documents' lengths from their offsets alone, so the stage costs a fraction of the chunk
stage it follows: it always runs.
"""

from __future__ import annotations

import csv
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from lm_core.chunk.pack import TAIL_FILE, split_is_val
from lm_core.progress import Progress
from lm_core.shards import read_shard, shard_paths
from lm_core.stages import UiArtifact
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.tokenize.stage import TOKENIZER_FILE, TOKENS_DIR
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint, write_json_atomic

if TYPE_CHECKING:
    from lm_core.config import Config
    from lm_core.stages import Inputs, StageRun

STAGE = "stats"
CODE_VERSION = 1
SPLITS = ("train", "val")
TOP_TOKENS = 50
HISTOGRAM_FILE = "length_histogram.csv"


def stats_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    """Its artifacts alone decide the statistics: no setting of the run does."""
    found = {"chunk": inputs["chunk"].fingerprint, "tokenize": inputs["tokenize"].fingerprint}
    return StageKey(stage=STAGE, fingerprint=fingerprint(STAGE, {}, found, CODE_VERSION), config={}, inputs=found)


def stats_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    """The statistics of the chunk artifact, cut from the tokenize artifact, as a published `stats`
    artifact (or the one published already)."""
    chunk, tokens, progress = inputs["chunk"], inputs["tokenize"], run.progress
    with ws.build(STAGE, key.fingerprint, config=key.config, inputs=key.inputs) as build:
        if build.published:
            return build.ref
        manifest = chunk.manifest()
        made, split_by = manifest["stats"], manifest["config"]
        counts = np.zeros(made["vocab_size"], dtype=np.int64)
        shards = {split: [*shard_paths(chunk.dir / split), chunk.dir / split / TAIL_FILE] for split in SPLITS}
        documents = shard_paths(tokens.dir / TOKENS_DIR)
        progress.start(sum(map(len, shards.values())) + len(documents), "shards")
        lengths = _document_lengths(documents, split_by["split_salt"], split_by["val_fraction"], progress)
        stats: dict[str, Any] = {}
        histogram: list[dict[str, Any]] = []
        for split, paths in shards.items():
            before = int(counts.sum())
            for path in paths:
                counts += np.bincount(_tokens(path), minlength=len(counts))
                progress.advance()
            in_blocks = {"tokens": int(counts.sum()) - before, "blocks": made[split]["blocks"]}
            stats[split] = in_blocks | _length_summary(lengths[split == "val"])
            histogram += _histogram(split, lengths[split == "val"])
        tokenizer = load_tokenizer(chunk.dir / TOKENIZER_FILE)
        top = _top_tokens(counts, tokenizer)
        build.stats = stats | {
            "tokens": int(counts.sum()),
            "vocab_size": len(counts),
            "vocab_used": int(np.count_nonzero(counts)),
            "top_tokens": {f"{row['text']} #{row['id']}": row["count"] for row in top},
        }
        write_json_atomic(build.dir / "stats.json", build.stats | {"length_histogram": histogram})
        _write_csv(build.dir / "top_tokens.csv", top)
        _write_csv(build.dir / HISTOGRAM_FILE, histogram)
    assert build.ref is not None
    return build.ref


def _tokens(path) -> np.ndarray:
    """A block shard's (or a tail's) tokens, in order, as one flat array."""
    column = read_shard(path).column("tokens").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False)


def _document_lengths(shards, salt: str, val_fraction: float, progress: Progress) -> list[np.ndarray]:
    """The token count of every document, [train, val], split as the chunk stage splits them."""
    lengths: list[list[np.ndarray]] = [[], []]
    for path in shards:
        table = read_shard(path)
        n = pc.list_value_length(table.column("tokens")).to_numpy(zero_copy_only=False)
        is_val = split_is_val(table.column("id").to_pylist(), salt, val_fraction)
        lengths[0].append(n[~is_val])
        lengths[1].append(n[is_val])
        progress.advance()
    return [np.concatenate(x).astype(np.int64) if x else np.empty(0, dtype=np.int64) for x in lengths]


def _length_summary(lengths: np.ndarray) -> dict[str, Any]:
    return {
        "documents": len(lengths),
        "mean_document_tokens": round(float(lengths.mean()), 1) if len(lengths) else None,
        "max_document_tokens": int(lengths.max()) if len(lengths) else None,
    }


def _histogram(split: str, lengths: np.ndarray) -> list[dict[str, Any]]:
    """Documents by length: empty ones, then power-of-two bins (1, 2-3, 4-7, ...), empty bins left out."""
    bins = np.where(lengths > 0, np.floor(np.log2(np.maximum(lengths, 1))) + 1, 0).astype(np.int64)
    return [
        {"split": split, "min_tokens": 2 ** (b - 1) if b else 0, "max_tokens": 2**b - 1, "documents": int(n)}
        for b, n in enumerate(np.bincount(bins))
        if n
    ]


def stats_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """The length histogram, in order (the stats table and the top tokens are the stats')."""
    with open(ref.dir / HISTOGRAM_FILE, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [UiArtifact("table", "stats-length-histogram", rows, "documents by length in tokens, per split")]


def _top_tokens(counts: np.ndarray, tokenizer) -> list[dict[str, Any]]:
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")[:TOP_TOKENS]
    return [
        {
            "rank": rank,
            "id": int(i),
            "text": json.dumps(tokenizer.decode([int(i)], skip_special_tokens=False), ensure_ascii=False),
            "count": int(counts[i]),
            "share": round(int(counts[i]) / total, 6),
        }
        for rank, i in enumerate(order, 1)
        if counts[i]
    ]


def _write_csv(path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
