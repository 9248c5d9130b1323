"""The chunk stage: every token kept exactly once in fixed blocks, a stable train/val split, and
counts that training and bits-per-byte rely on."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pytest
from helpers import clean_doc
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lm_core.chunk import TAIL_FILE, EmptySplitError, chunk_fingerprint, run_chunk, split_is_val
from lm_core.config import ChunkConfig, TokenizeConfig
from lm_core.schemas import CLEAN_DOC, token_doc
from lm_core.shards import CorruptShardError, read_shard, shard_name, shard_paths, write_shard
from lm_core.tokenize import SPECIAL_TOKENS, load_tokenizer, run_tokenize
from lm_core.workspace import Workspace, fingerprint

EOT = 0  # <|endoftext|>


def synthetic_tokenizer(vocab_size: int) -> Tokenizer:
    """A valid lmforge tokenizer of exactly `vocab_size` ids (specials, bytes, then filler)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    names = list(SPECIAL_TOKENS) + sorted(alphabet)
    names += [f"filler{i}" for i in range(vocab_size - len(names))]
    tok = Tokenizer(models.BPE(vocab={n: i for i, n in enumerate(names)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def random_docs(n: int, vocab_size: int, seed: int = 0, max_len: int = 40) -> list[dict]:
    """Documents of random token ids (never a special id), some of them empty."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        length = 0 if i % 17 == 0 else int(rng.integers(1, max_len))
        tokens = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=length)
        docs.append({"id": f"doc-{i:05d}", "tokens": tokens, "n_bytes": 3 * length + i % 5})
    return docs


def make_tokens(ws: Workspace, docs: list[dict], per_shard: int, vocab_size: int = 1000, tag: str = ""):
    """A published tokenize artifact holding `docs`, `per_shard` documents a shard."""
    key = hashlib.sha256(json.dumps([[d["id"], d["tokens"].tolist()] for d in docs]).encode()).hexdigest()
    fp = fingerprint("tokenize", {"test": key, "n": per_shard, "vocab": vocab_size, "tag": tag}, {}, 0)
    schema = token_doc(vocab_size)
    with ws.build("tokenize", fp, config={}, inputs={}) as b:
        synthetic_tokenizer(vocab_size).save(str(b.dir / "tokenizer.json"))
        for index, start in enumerate(range(0, len(docs), per_shard)):
            part = docs[start : start + per_shard]
            table = pa.Table.from_pydict(
                {
                    "id": [d["id"] for d in part],
                    "tokens": [d["tokens"].tolist() for d in part],
                    "n_bytes": [d["n_bytes"] for d in part],
                },
                schema=schema,
            )
            write_shard(b.dir / "tokens" / shard_name(index), table)
    return b.ref


def split_stream(ref, split: str) -> np.ndarray:
    """A split's blocks then its tail, as one token array: the stream the stage packed."""
    files = [*shard_paths(ref.dir / split), ref.dir / split / TAIL_FILE]
    return np.concatenate([read_shard(p).column("tokens").combine_chunks().flatten().to_numpy() for p in files])


def expected_stream(docs: list[dict]) -> np.ndarray:
    out = []
    for d in docs:
        out += d["tokens"].tolist() + [EOT]
    return np.array(out, dtype=np.int64)


def documents_of(stream: np.ndarray) -> list[tuple[int, ...]]:
    """The documents of a stream (cut after each end-of-text), sorted: order-free membership."""
    ends = np.flatnonzero(stream == EOT)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return sorted(tuple(stream[s:e].tolist()) for s, e in zip(starts, ends, strict=True))


def val_ids(docs, cfg: ChunkConfig) -> set[str]:
    ids = [d["id"] for d in docs]
    return {i for i, v in zip(ids, split_is_val(ids, cfg.split_salt, cfg.val_fraction), strict=True) if v}


def leftovers(ws: Workspace, stage: str) -> list[str]:
    folder = ws.root / stage
    return [p.name for p in folder.iterdir() if not p.name.startswith(".lock")] if folder.is_dir() else []


# ----------------------------------------------------------------------------- packing


def test_every_token_is_kept_once_in_order_with_an_end_of_text_after_each_document(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(300, vocab_size=1000)
    cfg = ChunkConfig(seq_len=8, val_fraction=0.2, blocks_per_shard=5)
    ref = run_chunk(cfg, make_tokens(ws, docs, per_shard=13), ws)

    held_out = val_ids(docs, cfg)
    for split, members in (
        ("train", [d for d in docs if d["id"] not in held_out]),
        ("val", [d for d in docs if d["id"] in held_out]),
    ):
        assert members, split
        np.testing.assert_array_equal(split_stream(ref, split), expected_stream(members))
        blocks = [read_shard(p) for p in shard_paths(ref.dir / split)]
        assert all(t.schema.field("tokens").type == pa.list_(pa.uint16(), 9) for t in blocks)
        assert [t.num_rows for t in blocks][:-1] == [5] * (len(blocks) - 1)  # full shards but the last
        tail = read_shard(ref.dir / split / TAIL_FILE)
        assert tail.num_rows == 1 and len(tail.column("tokens")[0]) < 9


def test_the_tokenizer_travels_with_the_blocks(tmp_path):
    ws = Workspace(tmp_path)
    tokens = make_tokens(ws, random_docs(50, 1000), per_shard=10)
    ref = run_chunk(ChunkConfig(seq_len=8), tokens, ws)
    assert (ref.dir / "tokenizer.json").read_bytes() == (tokens.dir / "tokenizer.json").read_bytes()
    load_tokenizer(ref.dir / "tokenizer.json")


def test_the_split_depends_on_documents_not_on_shard_layout_or_order(tmp_path):
    docs = random_docs(400, vocab_size=1000, seed=3)
    cfg = ChunkConfig(seq_len=16, val_fraction=0.25, blocks_per_shard=4)
    shuffled = docs[:]
    random.Random(7).shuffle(shuffled)

    runs = []
    for name, layout, per_shard in (("a", docs, 11), ("b", shuffled, 29)):
        ws = Workspace(tmp_path / name)
        ref = run_chunk(cfg, make_tokens(ws, layout, per_shard), ws)
        runs.append({split: documents_of(split_stream(ref, split)) for split in ("train", "val")})
    assert runs[0] == runs[1]
    n_val = len(runs[0]["val"])
    assert 0.15 * 400 < n_val < 0.35 * 400  # the hash honours val_fraction, roughly
    assert val_ids(docs, cfg) != val_ids(docs, cfg.model_copy(update={"split_salt": "other"}))


def test_no_validation_split_records_zero(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(40, 1000)
    ref = run_chunk(ChunkConfig(seq_len=8, val_fraction=0.0), make_tokens(ws, docs, 10), ws)
    assert ref.stats["val"] == {"documents": 0, "tokens": 0, "blocks": 0, "tail_tokens": 0, "shards": 0, "bytes": 0}
    assert read_shard(ref.dir / "val" / TAIL_FILE).column("tokens")[0].as_py() == []
    np.testing.assert_array_equal(split_stream(ref, "train"), expected_stream(docs))


@pytest.mark.parametrize(("vocab_size", "dtype"), [(1000, pa.uint16()), (65536, pa.uint16()), (65537, pa.uint32())])
def test_token_width_follows_the_vocabulary(tmp_path, vocab_size, dtype):
    ws = Workspace(tmp_path)
    docs = random_docs(30, vocab_size, max_len=60)
    docs[1]["tokens"][0] = vocab_size - 1  # the largest id must survive
    ref = run_chunk(ChunkConfig(seq_len=8, val_fraction=0.0), make_tokens(ws, docs, 10, vocab_size), ws)
    assert ref.stats["dtype"] == dtype.to_pandas_dtype().__name__
    assert read_shard(shard_paths(ref.dir / "train")[0]).schema.field("tokens").type == pa.list_(dtype, 9)
    np.testing.assert_array_equal(split_stream(ref, "train"), expected_stream(docs))


# ----------------------------------------------------------------------------- manifest and readers


def test_manifest_counts_are_right(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(200, 1000, seed=5)
    cfg = ChunkConfig(seq_len=32, val_fraction=0.3, blocks_per_shard=3)
    ref = run_chunk(cfg, make_tokens(ws, docs, 16), ws)
    held_out = val_ids(docs, cfg)
    stats = ref.manifest()["stats"]
    for split, members in (
        ("train", [d for d in docs if d["id"] not in held_out]),
        ("val", [d for d in docs if d["id"] in held_out]),
    ):
        s = stats[split]
        n_tokens = sum(len(d["tokens"]) + 1 for d in members)
        assert s["documents"] == len(members)
        assert s["tokens"] == n_tokens
        assert s["bytes"] == sum(d["n_bytes"] for d in members)
        assert s["blocks"] == n_tokens // 33 and s["tail_tokens"] == n_tokens % 33
        assert s["blocks"] == sum(read_shard(p).num_rows for p in shard_paths(ref.dir / split))
    assert stats["seq_len"] == 32 and stats["vocab_size"] == 1000 and stats["dtype"] == "uint16"
    assert ref.manifest()["rows"] == stats["train"]["blocks"] + stats["val"]["blocks"]


def test_hugging_face_datasets_reads_a_chunk_shard(tmp_path):
    import datasets

    ws = Workspace(tmp_path)
    ref = run_chunk(ChunkConfig(seq_len=8), make_tokens(ws, random_docs(60, 1000), 10), ws)
    path = shard_paths(ref.dir / "train")[0]
    ds = datasets.Dataset.from_file(str(path))
    expected = read_shard(path).column("tokens").to_pylist()
    assert len(ds) == len(expected) and ds["tokens"] == expected
    assert ds.with_format("numpy")[0]["tokens"].shape == (9,)


def test_rerun_reuses_the_artifact_and_only_output_settings_change_the_fingerprint(tmp_path):
    ws = Workspace(tmp_path)
    tokens = make_tokens(ws, random_docs(50, 1000), 10)
    cfg = ChunkConfig(seq_len=8)
    first = run_chunk(cfg, tokens, ws)
    assert run_chunk(cfg, tokens, ws) == first
    assert chunk_fingerprint(cfg.model_copy(update={"blocks_per_shard": 2}), tokens) == first.fingerprint
    for change in ({"seq_len": 16}, {"val_fraction": 0.5}, {"split_salt": "x"}):
        assert chunk_fingerprint(cfg.model_copy(update=change), tokens) != first.fingerprint


# ----------------------------------------------------------------------------- errors


def test_a_corrupt_token_shard_is_named_and_nothing_is_published(tmp_path):
    ws = Workspace(tmp_path)
    tokens = make_tokens(ws, random_docs(60, 1000), 10)
    victim = shard_paths(tokens.dir / "tokens")[3]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match=str(victim)):
        run_chunk(ChunkConfig(seq_len=8), tokens, ws)
    assert ws.artifacts("chunk") == [] and leftovers(ws, "chunk") == []


def test_an_empty_train_split_is_a_clear_error(tmp_path):
    ws = Workspace(tmp_path)
    tokens = make_tokens(ws, random_docs(3, 1000, max_len=5), 10)
    with pytest.raises(EmptySplitError, match="train split .* less than one block"):
        run_chunk(ChunkConfig(seq_len=64), tokens, ws)
    assert ws.artifacts("chunk") == [] and leftovers(ws, "chunk") == []


# ----------------------------------------------------------------------------- end to end


def test_clean_documents_come_back_from_the_blocks(tmp_path):
    ws = Workspace(tmp_path)
    texts = [f"Document {i}: " + "naïve café <|endoftext|> 😀 " * (i % 7) + "\n\tend  " for i in range(120)]
    rows = [clean_doc(i, t, host="x.org") for i, t in enumerate(texts)]
    parts = [rows[:25], [], rows[25:60], rows[60:]]  # an empty shard too: a filter may drop a whole shard
    with ws.build("clean", "e2e", config={}, inputs={}) as b:
        for index, part in enumerate(parts):
            write_shard(b.dir / "docs" / shard_name(index), pa.Table.from_pylist(part, schema=CLEAN_DOC))
    tokens = run_tokenize(TokenizeConfig(vocab_size=600), b.ref, ws)
    cfg = ChunkConfig(seq_len=16, val_fraction=0.2)
    ref = run_chunk(cfg, tokens, ws)

    tok = load_tokenizer(ref.dir / "tokenizer.json")
    held_out = val_ids(rows, cfg)
    for split in ("train", "val"):
        stream = split_stream(ref, split)
        ends = np.flatnonzero(stream == EOT)
        pieces = np.split(stream, ends + 1)[:-1]
        got = [tok.decode(p[:-1].tolist()) for p in pieces]
        want = [r["text"] for r in rows if (r["id"] in held_out) == (split == "val")]
        assert got == want
        assert ref.stats[split]["bytes"] == sum(len(t.encode()) for t in want)
