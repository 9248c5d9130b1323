"""The stats stage: a chunk artifact's statistics count every token of its blocks once, per split,
every document's length, and the commonest tokens; its artifacts alone decide them."""

from __future__ import annotations

import csv
import json

import numpy as np
from test_chunk import make_tokens, random_docs

from lm_core.chunk.stage import run_chunk
from lm_core.config import ChunkConfig, Config
from lm_core.stages import STAGE, StageRun, build, complete_inputs, stage_key
from lm_core.stats import HISTOGRAM_FILE, stats_ui
from lm_core.workspace import Workspace


def run_stats(chunk, tokens, ws):
    """The declared stage on these artifacts, as a flow runs it."""
    stage, inputs = STAGE["stats"], {"chunk": chunk, "tokenize": tokens}
    return build(stage, Config(), inputs, ws, stage_key(stage, Config(), inputs, ws), StageRun())


EOT = 0


def test_stats_count_every_token_of_each_split_and_every_document(tmp_path):
    ws = Workspace(tmp_path / "ws")
    tokens = make_tokens(ws, random_docs(200, 300, max_len=90), 30)
    chunk = run_chunk(ChunkConfig(seq_len=16, val_fraction=0.2, blocks_per_shard=7, group_blocks=2), tokens, ws)
    ref = run_stats(chunk, tokens, ws)

    made, s = chunk.stats, ref.stats
    for split in ("train", "val"):
        assert s[split]["tokens"] == made[split]["blocks"] * 17 + made[split]["tail_tokens"] == made[split]["tokens"]
        assert s[split]["documents"] == made[split]["documents"]
    assert s["tokens"] == s["train"]["tokens"] + s["val"]["tokens"]
    top = list(csv.DictReader(open(ref.dir / "top_tokens.csv", encoding="utf-8")))
    # an end-of-text after each document (and after each piece that decontamination left)
    assert top[0]["id"] == str(EOT) and int(top[0]["count"]) >= 200
    assert [int(r["count"]) for r in top] == sorted((int(r["count"]) for r in top), reverse=True)
    rows = list(csv.DictReader(open(ref.dir / "length_histogram.csv", encoding="utf-8")))
    assert sum(int(r["documents"]) for r in rows) == 200
    assert json.loads((ref.dir / "stats.json").read_text())["tokens"] == s["tokens"]


def test_a_histogram_bin_holds_the_lengths_it_names(tmp_path):
    ws = Workspace(tmp_path / "ws")
    lengths = [0, 1, 2, 3, 4, 7, 8, 100]
    docs = [{"id": f"d{i}", "tokens": np.full(n, 5 + i), "n_bytes": n} for i, n in enumerate(lengths)]
    tokens = make_tokens(ws, docs, 3)
    chunk = run_chunk(ChunkConfig(seq_len=8, val_fraction=0), tokens, ws)
    ref = run_stats(chunk, tokens, ws)
    train = ref.stats["train"]
    assert (train["max_document_tokens"], train["mean_document_tokens"]) == (100, 15.6)
    rows = [(r["min_tokens"], r["max_tokens"], r["documents"]) for r in csv.DictReader(open(ref.dir / HISTOGRAM_FILE))]
    expected = [(0, 0, 1), (1, 1, 1), (2, 3, 2), (4, 7, 2), (8, 15, 1), (64, 127, 1)]
    assert rows == [tuple(map(str, r)) for r in expected]
    (table,) = stats_ui(None, ref)  # the UI shows the bins in this order
    assert [(r["min_tokens"], r["documents"]) for r in table.data] == [(str(a), str(n)) for a, _, n in expected]


def test_the_declared_stage_finds_its_artifact_and_only_the_chunk_decides_it(tmp_path):
    ws = Workspace(tmp_path / "ws")
    tokens = make_tokens(ws, random_docs(60, 300), 20)
    chunk = run_chunk(ChunkConfig(seq_len=8), tokens, ws)
    first = run_stats(chunk, tokens, ws)

    stage = STAGE["stats"]
    inputs = complete_inputs(stage, {"chunk": chunk}, ws)  # its tokenize artifact: found upstream of the chunk
    assert inputs["tokenize"] == tokens
    key = stage_key(stage, Config(seed=7, workspace=ws.root), inputs, ws)
    assert key.fingerprint == first.fingerprint  # no setting of the run counts
    again = build(stage, Config(), inputs, ws, key, StageRun())
    assert again == first and again.manifest()["created"] == first.manifest()["created"]  # published: not rebuilt

    other = run_chunk(ChunkConfig(seq_len=12), tokens, ws)
    assert stage_key(stage, Config(), complete_inputs(stage, {"chunk": other}, ws), ws).fingerprint != first.fingerprint
