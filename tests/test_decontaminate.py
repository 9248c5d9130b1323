"""Decontamination in the chunk stage: a training document loses exactly the passages it shares with
an evaluation set (the validation documents, `evaluate.texts`, `evaluate.pair_sets`), the manifest
says what was cut and from where, and common text is kept."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
from helpers import clean_doc
from test_chunk import (
    EOT,
    expected_groups,
    group_streams,
    make_tokens,
    packed_groups,
    random_docs,
    split_blocks,
    split_tail,
    val_ids,
)

from lm_core.chunk.decontaminate import Decontaminator
from lm_core.chunk.stage import chunk_fingerprint, run_chunk
from lm_core.config import ChunkConfig, DecontaminateConfig, EvaluateConfig, FilesSource, TokenizeConfig
from lm_core.schemas import CLEAN_DOC
from lm_core.shards import shard_name, write_shard
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.tokenize.stage import run_tokenize
from lm_core.workspace import Workspace

WORDS = (
    "river stone garden window letter market silver autumn engine harbor candle forest bridge "
    "morning signal paper orange winter valley mirror ladder thunder copper meadow pencil island "
    "basket violin summer planet feather tunnel marble canvas lantern saddle compass blanket "
    "walks finds keeps paints builds opens carries follows watches counts folds hears"
).split()


def sentences(rng: random.Random, n: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "." for _ in range(n))


# ----------------------------------------------------------------------------- the cut itself


def test_a_passage_is_cut_and_its_document_split_there():
    d = Decontaminator(DecontaminateConfig(ngram=4, max_train_docs=None), vocab_size=100, eot=EOT, decode=str)
    d.add_set("validation", [np.array([10, 11, 12, 13, 14, 15])])
    d.freeze()
    stream = np.array([1, 2, 10, 11, 12, 13, 3, EOT, 10, 11, 12, 13, 14, EOT, 12, 13, 14, 15, 4, 5, EOT, 6, EOT])
    d.count(stream)
    out = d.cut(stream, lambda i: f"doc{i}")
    # middle: two pieces, never joined; a whole document: gone with its end-of-text; a start: just cut
    assert out.tolist() == [1, 2, EOT, 3, EOT, 4, 5, EOT, 6, EOT]
    report = d.report()
    assert (report["tokens"], report["documents"], report["documents_emptied"]) == (4 + 5 + 4, 3, 1)
    assert [e["document"] for e in report["sets"]["validation"]["examples"]] == ["doc0", "doc1", "doc2"]


def test_common_text_is_kept_and_only_then():
    """A window found in more than `max_train_docs` training documents is boilerplate, as GPT-3 had it."""
    passage = list(range(20, 31))
    stream = np.array([t for i in range(12) for t in (60 + i, *passage, 80 + i, EOT)])
    for max_docs, cut in ((10, False), (12, True), (None, True)):
        d = Decontaminator(DecontaminateConfig(ngram=4, max_train_docs=max_docs), 100, EOT, str)
        d.add_set("validation", [np.array([5, *passage, 6])])
        d.freeze()
        d.count(stream)
        out = d.cut(stream, str)
        assert len(out) == (len(stream) - 12 * (len(passage) - 1) if cut else len(stream)), max_docs
        assert d.report()["common_ngrams_kept"] == (0 if cut else len(passage) - 3)


# ----------------------------------------------------------------------------- in the stage


def test_a_training_document_that_copies_a_validation_passage_loses_exactly_that_passage(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(120, vocab_size=1000, seed=2, max_len=60)
    cfg = ChunkConfig(seq_len=16, val_fraction=0.25, group_blocks=4)
    held_out = val_ids(docs, cfg)
    source = next(d for d in docs if d["id"] in held_out and len(d["tokens"]) >= 30)
    copier = next(d for d in docs if d["id"] not in held_out and len(d["tokens"]) >= 10)
    passage = source["tokens"][5:25]
    before, after = np.split(copier["tokens"], [len(copier["tokens"]) // 2])
    copier["tokens"] = np.concatenate([before, passage, after])
    ref = run_chunk(cfg, make_tokens(ws, docs, per_shard=16), ws)

    report = ref.stats["decontaminate"]
    assert (report["tokens"], report["documents"], report["documents_emptied"]) == (20, 1, 0)
    validation = report["sets"]["validation"]
    assert (validation["tokens"], validation["documents"]) == (20, 1)
    assert validation["examples"][0]["document"] == copier["id"]
    # the training blocks hold the copier as its two pieces, everything else as it was
    groups = expected_groups(docs, cfg, "train")
    lengths = [sum(len(d["tokens"]) + 1 for d in g) - (19 if any(d is copier for d in g) else 0) for g in groups]
    streams = group_streams(ref, "train", lengths)
    for group, stream in zip(groups, streams, strict=True):
        want = [t for d in group for t in [*([*before, EOT, *after] if d is copier else d["tokens"]), EOT]]
        np.testing.assert_array_equal(stream, want)
    assert ref.stats["train"]["tokens"] == sum(lengths)
    # validation documents are evaluated on, never cut
    _, val_streams = packed_groups(ref, docs, cfg, "val")
    assert any(passage.tobytes() in s.astype(passage.dtype).tobytes() for s in val_streams)


def test_passages_of_evaluation_texts_and_pair_files_leave_the_training_blocks(tmp_path):
    rng = random.Random(4)
    texts = [sentences(rng, 12) for _ in range(40)]
    in_texts, in_pairs = sentences(rng, 3), sentences(rng, 3)  # passages an evaluation set shares
    texts[7] = f"{texts[7]} {in_texts} {sentences(rng, 2)}"
    texts[9] = f"{sentences(rng, 2)} {in_pairs} {texts[9]}"
    rows = [clean_doc(i, t) for i, t in enumerate(texts)]
    ws = Workspace(tmp_path / "ws")
    with ws.build("clean", "texts", config={}, inputs={}) as b:
        write_shard(b.dir / "docs" / shard_name(0), pa.Table.from_pylist(rows, schema=CLEAN_DOC))
    tokens = run_tokenize(TokenizeConfig(vocab_size=600), b.ref, ws)
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "story.txt").write_text(f"Once upon a time. {in_texts} The end.\n")
    (tmp_path / "quiz.jsonl").write_text(json.dumps({"prompt": "Continue:", "reference": in_pairs}) + "\n")
    evaluation = EvaluateConfig(
        texts=[FilesSource(path=str(tmp_path / "benchmark"))], pair_sets=[str(tmp_path / "quiz.jsonl")]
    )
    # one group: the training stream is the blocks then the tail, documents in packing order
    cfg = ChunkConfig(seq_len=16, val_fraction=0.1, group_blocks=100_000)
    assert rows[7]["id"] not in val_ids(rows, cfg) and rows[9]["id"] not in val_ids(rows, cfg)

    def training_text(ref) -> str:
        assert ref.stats["train"]["groups"] == 1
        stream = np.concatenate([*split_blocks(ref, "train"), split_tail(ref, "train")])
        return load_tokenizer(ref.dir / "tokenizer.json").decode(stream.tolist())

    kept = run_chunk(cfg.model_copy(update={"decontaminate": DecontaminateConfig(enabled=False)}), tokens, ws)
    assert in_texts in training_text(kept) and in_pairs in training_text(kept)
    ref = run_chunk(cfg, tokens, ws, evaluation=evaluation)
    text = training_text(ref)
    assert in_texts not in text and in_pairs not in text
    assert texts[7][:-30] not in text and texts[7][:60] in text  # the rest of the document stays
    sets = ref.stats["decontaminate"]["sets"]
    assert set(sets) == {"validation", "text.benchmark", "pairs.quiz"}
    for name, row, passage in (("text.benchmark", rows[7], in_texts), ("pairs.quiz", rows[9], in_pairs)):
        assert sets[name]["documents"] == 1 and sets[name]["examples"][0]["document"] == row["id"]
        assert sets[name]["tokens"] >= len(tokens_of(ref, passage)) - 2  # all but its edges' tokens
        assert passage[10:40] in sets[name]["examples"][0]["text"]
    assert sets["validation"]["tokens"] == 0


def tokens_of(ref, text: str) -> list[int]:
    return load_tokenizer(ref.dir / "tokenizer.json").encode(text).ids


def test_the_evaluation_sets_are_inputs_of_the_chunk_only_when_decontaminating(tmp_path):
    ws = Workspace(tmp_path / "ws")
    tokens = make_tokens(ws, random_docs(40, 1000), per_shard=10)
    story = tmp_path / "texts" / "story.txt"
    story.parent.mkdir()
    story.write_text("A short story of a river.\n")
    evaluation = EvaluateConfig(texts=[FilesSource(path=str(story.parent))])
    cfg = ChunkConfig(seq_len=8)
    with_texts = chunk_fingerprint(cfg, tokens, evaluation)
    assert with_texts != chunk_fingerprint(cfg, tokens)
    story.write_text("A short story of a mountain.\n")
    assert chunk_fingerprint(cfg, tokens, evaluation) != with_texts  # edited: decontaminate again
    off = cfg.model_copy(update={"decontaminate": DecontaminateConfig(enabled=False)})
    assert chunk_fingerprint(off, tokens, evaluation) == chunk_fingerprint(off, tokens)
