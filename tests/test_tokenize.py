"""The tokenize stage: a byte-level BPE that encodes any text losslessly, and token shards that
decode back to the clean documents exactly."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import pathlib
import random
import re
import shutil
import textwrap
import typing

import pyarrow as pa
import pytest
import test_clean_incremental as pydoc_site
from helpers import clean_doc
from tokenizers import pre_tokenizers, trainers

from lm_core.clean.stage import run_clean
from lm_core.config import CleanConfig, TokenizeConfig
from lm_core.progress import NullProgress
from lm_core.progress import thread_map as progress_thread_map
from lm_core.schemas import CLEAN_DOC, token_doc
from lm_core.shards import read_shard, shard_name, shard_paths, write_shard
from lm_core.tokenize.bpe import SPECIAL_TOKENS, TokenizerError, _untrained, load_tokenizer, train_tokenizer
from lm_core.tokenize.stage import EmptyCorpusError, run_tokenize, tokenize_fingerprint
from lm_core.workspace import Workspace, fingerprint

# Real prose and code-ish text, in memory, a few tens of KB.
CORPUS = [m.__doc__ for m in (argparse, collections, json, pathlib, re, typing, textwrap) if m.__doc__]

TRICKY = [
    "",
    " ",
    "plain ascii",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\tand\t\ttabs\n\nnewlines\r\nCRLF\rCR",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "CJK 漢字かなカナ 한국어 中文标点，。",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 and precomposed é ä ñ",
    "RTL עברית العربية with numbers 12345678901234567890",
    "zero width\u200b\u200c\u200d joiners, NBSP\u00a0here, BOM\ufeff inside",
    "control chars \x00\x01\x1f\x7f and replacement \ufffd",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 private use \ue000\U000f0000",
    "code:\n    def f(x):\n\treturn x ** 2  # comment\n",
    "<|endoftext|>",
    "x<|endoftext|>y <|user|> <|assistant|><|end|> <|pad|><|system|>",
    "\n\n\n   \t \n",
]


def random_unicode(rng: random.Random, n: int) -> str:
    """Any code point but surrogates, from every plane, with spaces and newlines mixed in."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(" \n\t"))
        elif r < 0.5:
            out.append(chr(rng.randint(0x20, 0x7E)))
        else:
            cp = rng.randint(0x80, 0x10FFFF)
            out.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")
    return "".join(out)


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(CORPUS, vocab_size=600, min_frequency=2)


@pytest.fixture(scope="module")
def tokenizer_file(trained, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    trained.save(str(path))
    return path


# ----------------------------------------------------------------------------- the tokenizer


def test_training_gives_the_requested_vocabulary_with_special_tokens_first(trained):
    assert trained.get_vocab_size(with_added_tokens=True) == 600
    for i, token in enumerate(SPECIAL_TOKENS):
        assert trained.token_to_id(token) == i


def test_a_tiny_corpus_gives_fewer_tokens_but_still_every_byte_and_special_token():
    tok = train_tokenizer(["hello hello world"], vocab_size=5000, min_frequency=1)
    size = tok.get_vocab_size(with_added_tokens=True)
    assert len(SPECIAL_TOKENS) + 256 <= size < 5000
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.decode(tok.encode("Ünïcödé never seen 😀").ids) == "Ünïcödé never seen 😀"


def test_training_is_capped_by_max_train_chars():
    from lm_core.tokenize.bpe import capped

    assert list(capped(["abcd", "efgh", "ijkl"], 6)) == ["abcd", "ef"]
    assert list(capped(["abcd"], 100)) == ["abcd"]


@pytest.mark.parametrize("text", TRICKY)
def test_decode_of_encode_is_the_exact_text(trained, text):
    assert trained.decode(trained.encode(text).ids) == text


def test_decode_of_encode_is_exact_for_random_unicode(trained):
    rng = random.Random(0)
    texts = [random_unicode(rng, rng.randint(1, 300)) for _ in range(200)]
    for text, enc in zip(texts, trained.encode_batch(texts), strict=True):
        assert trained.decode(enc.ids) == text


def test_special_token_strings_in_text_are_ordinary_text(trained, tokenizer_file):
    for tok in (trained, load_tokenizer(tokenizer_file)):
        for special in SPECIAL_TOKENS:
            ids = tok.encode(f"before {special} after").ids
            assert not set(ids) & set(range(len(SPECIAL_TOKENS))), special
            assert tok.decode(ids) == f"before {special} after"


def test_chat_templates_may_opt_in_to_special_token_strings(tokenizer_file):
    tok = load_tokenizer(tokenizer_file, parse_special_tokens=True)
    assert tok.encode("<|user|>hi<|end|>").ids[0] == SPECIAL_TOKENS.index("<|user|>")


def test_a_saved_tokenizer_loads_and_encodes_the_same(trained, tokenizer_file):
    loaded = load_tokenizer(tokenizer_file)
    for text in CORPUS + TRICKY:
        assert loaded.encode(text).ids == trained.encode(text).ids


def test_a_missing_or_broken_tokenizer_file_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1.0", "model": {')
    with pytest.raises(TokenizerError, match=re.escape(str(broken))):
        load_tokenizer(broken)


def test_a_tokenizer_without_the_special_tokens_is_refused_naming_them(tmp_path):
    tok = _untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path / "gpt2-like.json"
    tok.save(str(path))
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(path)
    assert str(path) in str(err.value)
    assert "lacks the special tokens <|pad|>, <|system|>, <|user|>, <|assistant|>, <|end|> (" in str(err.value)


# ----------------------------------------------------------------------------- the stage


def make_clean(ws: Workspace, texts: list[str], per_shard: int, empty_shards: int = 0):
    """A published clean artifact holding `texts`, `per_shard` documents a shard."""
    fp = fingerprint(
        "clean",
        {"test": hashlib.sha256(json.dumps(texts).encode()).hexdigest(), "n": per_shard, "empty": empty_shards},
        {},
        0,
    )
    rows = [clean_doc(i, t) for i, t in enumerate(texts)]
    with ws.build("clean", fp, config={}, inputs={}) as b:
        index = 0
        for start in range(0, len(rows), per_shard):
            write_shard(
                b.dir / "docs" / shard_name(index),
                pa.Table.from_pylist(rows[start : start + per_shard], schema=CLEAN_DOC),
            )
            index += 1
        for _ in range(empty_shards):
            write_shard(b.dir / "docs" / shard_name(index), CLEAN_DOC.empty_table())
            index += 1
    return b.ref


def leftovers(ws: Workspace, stage: str) -> list[str]:
    """Anything a failed build left in the stage's folder but its lock file."""
    folder = ws.root / stage
    return [p.name for p in folder.iterdir() if not p.name.startswith(".lock")] if folder.is_dir() else []


def stage_docs() -> list[str]:
    rng = random.Random(1)
    return CORPUS + TRICKY + [random_unicode(rng, rng.randint(0, 400)) for _ in range(40)]


def thread_map(fn, items, progress=NullProgress()):
    return progress_thread_map(fn, items, progress, workers=3)


class RecordingProgress:
    def __init__(self):
        self.calls = []

    def start(self, total, unit):
        self.calls.append(("start", total, unit))

    def advance(self, n=1):
        self.calls.append(("advance", n))


def test_token_shards_decode_back_to_the_documents_exactly(tmp_path):
    ws = Workspace(tmp_path)
    docs = stage_docs()
    clean = make_clean(ws, docs, per_shard=7, empty_shards=1)
    progress = RecordingProgress()
    ref = run_tokenize(TokenizeConfig(vocab_size=600, batch_size=5), clean, ws, progress=progress)

    tok = load_tokenizer(ref.dir / "tokenizer.json")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    tables = [read_shard(p, token_doc(vocab)) for p in shard_paths(ref.dir / "tokens")]
    clean_tables = [read_shard(p, CLEAN_DOC) for p in shard_paths(clean.dir / "docs")]
    assert [t.num_rows for t in tables] == [t.num_rows for t in clean_tables]  # one token shard per clean shard
    table = pa.concat_tables(tables)
    assert table.schema.field("tokens").type == pa.list_(pa.uint16())
    assert table.column("id").to_pylist() == pa.concat_tables(clean_tables).column("id").to_pylist()
    decoded = tok.decode_batch(table.column("tokens").to_pylist(), skip_special_tokens=False)
    assert decoded == docs
    assert table.column("n_bytes").to_pylist() == [len(d.encode()) for d in docs]

    stats = ref.stats
    assert stats["rows"] == len(docs) == ref.manifest()["rows"]
    assert stats["tokens"] == sum(len(t) for t in table.column("tokens").to_pylist())
    assert stats["bytes"] == sum(len(d.encode()) for d in docs)
    assert stats["vocab_size"] == 600
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["tokens"], rel=1e-3)
    assert stats["special_tokens"]["<|endoftext|>"] == 0
    assert {"train_seconds", "encode_seconds"} <= stats.keys()
    n_shards = len(clean_tables)
    starts = [i for i, c in enumerate(progress.calls) if c[0] == "start"]
    assert [progress.calls[i][1] for i in starts] == [n_shards, n_shards]  # training, then encoding
    training, encoding = progress.calls[starts[0] + 1 : starts[1]], progress.calls[starts[1] + 1 :]
    assert sum(c[1] for c in training) == n_shards and sum(c[1] for c in encoding) == n_shards


def test_thread_pool_map_gives_the_same_artifact_as_serial(tmp_path):
    docs = stage_docs()
    outputs = []
    for name, map_shards in (("serial", None), ("threads", thread_map)):
        ws = Workspace(tmp_path / name)
        clean = make_clean(ws, docs, per_shard=5)
        kwargs = {"map_shards": map_shards} if map_shards else {}
        ref = run_tokenize(TokenizeConfig(vocab_size=600, batch_size=4), clean, ws, **kwargs)
        files = sorted(p for p in ref.dir.rglob("*") if p.is_file() and p.name != "_manifest.json")
        outputs.append((ref.fingerprint, {p.relative_to(ref.dir): p.read_bytes() for p in files}))
    assert outputs[0] == outputs[1]


def test_a_rerun_returns_the_published_artifact_without_work(tmp_path):
    ws = Workspace(tmp_path)
    clean = make_clean(ws, stage_docs(), per_shard=10)
    cfg = TokenizeConfig(vocab_size=600)
    first = run_tokenize(cfg, clean, ws)

    def must_not_run(fn, items, progress=None):
        raise AssertionError("the published artifact should have been reused")

    again = run_tokenize(cfg, clean, ws, map_shards=must_not_run)
    assert again == first
    assert tokenize_fingerprint(cfg.model_copy(update={"batch_size": 7}), clean) == first.fingerprint  # speed knob
    assert tokenize_fingerprint(cfg.model_copy(update={"vocab_size": 700}), clean) != first.fingerprint


def test_a_given_tokenizer_is_copied_and_fingerprinted_by_content(tmp_path, tokenizer_file):
    ws = Workspace(tmp_path / "ws")
    clean = make_clean(ws, stage_docs(), per_shard=10)
    ref = run_tokenize(TokenizeConfig(path=str(tokenizer_file)), clean, ws)
    assert (ref.dir / "tokenizer.json").read_bytes() == tokenizer_file.read_bytes()
    assert ref.stats["tokenizer"] == "given" and ref.stats["vocab_size"] == 600

    moved = tmp_path / "elsewhere" / "renamed.json"
    moved.parent.mkdir()
    shutil.copyfile(tokenizer_file, moved)
    assert tokenize_fingerprint(TokenizeConfig(path=str(moved), vocab_size=4096), clean) == ref.fingerprint
    edited = json.loads(moved.read_text())
    edited["decoder"] = None
    moved.write_text(json.dumps(edited))
    assert tokenize_fingerprint(TokenizeConfig(path=str(moved)), clean) != ref.fingerprint


def test_a_given_tokenizer_that_is_unusable_publishes_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    clean = make_clean(ws, stage_docs(), per_shard=10)
    bad = tmp_path / "bad.json"
    bad.write_text("not json at all")
    with pytest.raises(TokenizerError, match="bad.json"):
        run_tokenize(TokenizeConfig(path=str(bad)), clean, ws)
    with pytest.raises(TokenizerError, match="does not exist"):
        run_tokenize(TokenizeConfig(path=str(tmp_path / "missing.json")), clean, ws)
    assert ws.artifacts("tokenize") == [] and leftovers(ws, "tokenize") == []


def test_an_empty_corpus_is_a_clear_error_and_publishes_nothing(tmp_path):
    ws = Workspace(tmp_path)
    clean = make_clean(ws, [], per_shard=10, empty_shards=2)
    with pytest.raises(EmptyCorpusError, match="no documents"):
        run_tokenize(TokenizeConfig(), clean, ws)
    assert ws.artifacts("tokenize") == [] and leftovers(ws, "tokenize") == []


# ----------------------------------------------------------------------------- refreshes

# A real site (pydoc's pages, served over HTTP) crawled once per snapshot, as in the incremental
# clean tests.
pages, site = pydoc_site.pages, pydoc_site.site  # fixtures


def tokens_by_document(ref) -> dict[str, list[int]]:
    table = pa.concat_tables(read_shard(p) for p in shard_paths(ref.dir / "tokens"))
    return dict(zip(table.column("id").to_pylist(), table.column("tokens").to_pylist(), strict=True))


def snapshot(ws: Workspace, url: str, label: str):
    """The clean artifact of a new crawl snapshot of the site."""
    return run_clean(CleanConfig(), pydoc_site.crawl(ws, url, label), ws)


def test_a_refresh_keeps_the_tokenizer_of_the_snapshot_before_unless_asked_to_retrain(site, tmp_path):
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    cfg = TokenizeConfig(vocab_size=600)
    clean1 = snapshot(ws, url, "s1")
    first = run_tokenize(cfg, clean1, ws)
    assert first.stats["tokenizer"] == "trained"

    pydoc_site.change_one_word(folder / pydoc_site.CHANGED)
    clean2 = snapshot(ws, url, "s2")
    second = run_tokenize(cfg, clean2, ws)
    assert second.stats["tokenizer"] == "reused"
    assert (second.dir / "tokenizer.json").read_bytes() == (first.dir / "tokenizer.json").read_bytes()
    assert second.manifest()["inputs"] == {"clean": clean2.fingerprint, "tokenizer": first.fingerprint}
    before, after = tokens_by_document(first), tokens_by_document(second)
    unchanged = before.keys() & after.keys()
    assert len(unchanged) == len(after) - 1  # every document but the edited one ...
    assert all(before[i] == after[i] for i in unchanged)  # ... keeps its token ids
    # only earlier snapshots count: neither fingerprint moves now that both exist
    assert tokenize_fingerprint(cfg, clean1) == first.fingerprint
    assert tokenize_fingerprint(cfg, clean2) == second.fingerprint
    assert tokenize_fingerprint(cfg.model_copy(update={"retrain": True}), clean1) == first.fingerprint

    retrained = run_tokenize(cfg.model_copy(update={"retrain": True}), clean2, ws)
    assert retrained.stats["tokenizer"] == "trained" and retrained.fingerprint != second.fingerprint
    assert retrained.manifest()["inputs"] == {"clean": clean2.fingerprint}
    # other settings: no tokenizer to reuse
    assert run_tokenize(TokenizeConfig(vocab_size=700), clean2, ws).stats["tokenizer"] == "trained"


def test_a_damaged_earlier_tokenizer_is_passed_over(site, tmp_path):
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    first = run_tokenize(TokenizeConfig(vocab_size=600), snapshot(ws, url, "s1"), ws)
    path = first.dir / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:5000])

    pydoc_site.change_one_word(folder / pydoc_site.CHANGED)
    second = run_tokenize(TokenizeConfig(vocab_size=600), snapshot(ws, url, "s2"), ws)
    assert second.stats["tokenizer"] == "trained" and "tokenizer" not in second.manifest()["inputs"]
