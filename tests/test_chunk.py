"""The chunk stage: every token kept exactly once in fixed blocks, a stable train/val split, blocks
that stay the same when another document changes, and counts that training and bits-per-byte
rely on. (Decontamination: test_decontaminate.py.)"""

from __future__ import annotations

import collections
import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pytest
from helpers import clean_doc
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lm_core.chunk.pack import TAIL_FILE, document_groups, split_is_val
from lm_core.chunk.stage import EmptySplitError, chunk_fingerprint, run_chunk
from lm_core.config import ChunkConfig, TokenizeConfig
from lm_core.schemas import CLEAN_DOC, token_doc
from lm_core.shards import CorruptShardError, read_shard, shard_name, shard_paths, write_shard
from lm_core.tokenize.bpe import SPECIAL_TOKENS, load_tokenizer
from lm_core.tokenize.stage import run_tokenize
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


def split_blocks(ref, split: str) -> list[np.ndarray]:
    """A split's blocks in shard order, each an array of seq_len + 1 tokens."""
    out = []
    for p in shard_paths(ref.dir / split):
        col = read_shard(p).column("tokens").combine_chunks()
        out += list(col.flatten().to_numpy().reshape(len(col), -1))
    return out


def split_tail(ref, split: str) -> np.ndarray:
    return read_shard(ref.dir / split / TAIL_FILE).column("tokens").combine_chunks().flatten().to_numpy()


def group_streams(ref, split: str, lengths: list[int]) -> list[np.ndarray]:
    """The token stream of each group, from the split's blocks and tail, given the groups' token
    counts in packing order. Undoes the packing: a group's whole blocks come first; its leftover
    joins the leftover stream, whose blocks follow as soon as it holds a whole one."""
    n = ref.stats["seq_len"] + 1
    blocks = iter(split_blocks(ref, split))
    wholes, leftover_blocks, pending = [], [], 0
    for length in lengths:
        wholes.append([next(blocks) for _ in range(length // n)])
        pending += length % n
        leftover_blocks += [next(blocks) for _ in range(pending // n)]
        pending %= n
    assert next(blocks, None) is None, "more blocks than the groups hold"
    leftovers = np.concatenate([*leftover_blocks, split_tail(ref, split)])
    assert len(leftovers) == sum(length % n for length in lengths)
    out, at = [], 0
    for whole, length in zip(wholes, lengths, strict=True):
        out.append(np.concatenate([*whole, leftovers[at : at + length % n]]).astype(np.int64))
        at += length % n
    return out


def expected_stream(docs: list[dict]) -> np.ndarray:
    out = []
    for d in docs:
        out += d["tokens"].tolist() + [EOT]
    return np.array(out, dtype=np.int64)


def expected_groups(docs: list[dict], cfg: ChunkConfig, split: str) -> list[list[dict]]:
    """The split's documents, grouped in packing order."""
    held_out = val_ids(docs, cfg)
    members = [d for d in docs if (d["id"] in held_out) == (split == "val")]
    lengths = np.array([len(d["tokens"]) for d in members])
    groups = document_groups([d["id"] for d in members], lengths, cfg.group_blocks * (cfg.seq_len + 1))
    return [[members[i] for i in g] for g in groups]


def packed_groups(ref, docs: list[dict], cfg: ChunkConfig, split: str) -> tuple[list[list[dict]], list[np.ndarray]]:
    """(the groups the split should hold, the streams it holds for them)."""
    groups = expected_groups(docs, cfg, split)
    return groups, group_streams(ref, split, [sum(len(d["tokens"]) + 1 for d in g) for g in groups])


def val_ids(docs, cfg: ChunkConfig) -> set[str]:
    ids = [d["id"] for d in docs]
    return {i for i, v in zip(ids, split_is_val(ids, cfg.split_salt, cfg.val_fraction), strict=True) if v}


def block_bytes(ref, split: str = "train") -> list[bytes]:
    return [b.tobytes() for b in split_blocks(ref, split)]


def leftovers(ws: Workspace, stage: str) -> list[str]:
    folder = ws.root / stage
    return [p.name for p in folder.iterdir() if not p.name.startswith(".lock")] if folder.is_dir() else []


# ----------------------------------------------------------------------------- packing


def test_every_token_is_kept_once_in_order_with_an_end_of_text_after_each_document(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(300, vocab_size=1000)
    cfg = ChunkConfig(seq_len=8, val_fraction=0.2, blocks_per_shard=5, group_blocks=4)
    ref = run_chunk(cfg, make_tokens(ws, docs, per_shard=13), ws)

    held_out = val_ids(docs, cfg)
    for split in ("train", "val"):
        groups, streams = packed_groups(ref, docs, cfg, split)
        members = sorted(d["id"] for g in groups for d in g)
        assert members == sorted(d["id"] for d in docs if (d["id"] in held_out) == (split == "val"))
        assert 1 < len(groups) == ref.stats[split]["groups"], split  # every document once, in groups
        for group, stream in zip(groups, streams, strict=True):
            np.testing.assert_array_equal(stream, expected_stream(group))
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


def test_the_split_and_the_blocks_depend_on_documents_not_on_shard_layout_or_order(tmp_path):
    docs = random_docs(400, vocab_size=1000, seed=3)
    cfg = ChunkConfig(seq_len=16, val_fraction=0.25, blocks_per_shard=4)
    shuffled = docs[:]
    random.Random(7).shuffle(shuffled)

    runs = []
    for name, layout, per_shard in (("a", docs, 11), ("b", shuffled, 29)):
        ws = Workspace(tmp_path / name)
        ref = run_chunk(cfg, make_tokens(ws, layout, per_shard), ws)
        runs.append({split: (block_bytes(ref, split), split_tail(ref, split).tolist()) for split in ("train", "val")})
    assert runs[0] == runs[1]  # the same blocks, in the same order
    n_val = len(val_ids(docs, cfg))
    assert 0.15 * 400 < n_val < 0.35 * 400  # the hash honours val_fraction, roughly
    assert val_ids(docs, cfg) != val_ids(docs, cfg.model_copy(update={"split_salt": "other"}))


def edited(docs: list[dict], index: int) -> list[dict]:
    """The corpus after one page changed: one token more in its middle, and so a new id."""
    out = [dict(d) for d in docs]
    d = out[index]
    middle = len(d["tokens"]) // 2
    d["tokens"] = np.insert(d["tokens"], middle, 7)
    d["id"] += "-edited"
    return out


def test_a_changed_document_leaves_most_training_blocks_as_they_were(tmp_path):
    """A nightly refresh where one page changed: only the blocks of the groups it leaves and
    joins change (and a few of the leftover blocks), wherever it stood in the crawl."""
    docs = random_docs(800, vocab_size=1000, seed=11, max_len=120)
    cfg = ChunkConfig(seq_len=32, val_fraction=0.1, group_blocks=8)
    ws = Workspace(tmp_path)
    before = block_bytes(run_chunk(cfg, make_tokens(ws, docs, per_shard=100), ws))
    train = [i for i, d in enumerate(docs) if d["id"] not in val_ids(docs, cfg)]
    for index in (train[0], train[len(train) // 2]):  # the first page, which moved every block before
        after = block_bytes(run_chunk(cfg, make_tokens(ws, edited(docs, index), per_shard=100), ws))
        same = sum((collections.Counter(before) & collections.Counter(after)).values())
        assert same / len(after) > 0.85, (index, same, len(after))  # 0.93-0.97 measured
        assert abs(len(after) - len(before)) <= 1


def test_groups_are_about_the_size_asked_and_decided_by_each_document_alone():
    rng = np.random.default_rng(5)
    ids = [f"page-{i}" for i in range(5000)]
    lengths = rng.integers(10, 400, size=len(ids))
    groups = document_groups(ids, lengths, group_tokens=4000)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(ids)))  # each document once
    sizes = [int((lengths[g] + 1).sum()) for g in groups]
    assert 2000 < np.mean(sizes) < 8000  # about one boundary every group_tokens tokens

    def as_ids(gs, names, keep):
        return {tuple(names[i] for i in g if keep(names[i])) for g in gs}

    # a document gone: the other groups are unchanged (but the one or two around it)
    dropped = ids[:100] + ids[101:]
    after = document_groups(dropped, np.delete(lengths, 100), 4000)
    changed = as_ids(groups, ids, lambda i: i != ids[100]) ^ as_ids(after, dropped, lambda i: True)
    assert len(changed) <= 4
    # the input order plays no part
    order = rng.permutation(len(ids))
    shuffled = document_groups([ids[i] for i in order], lengths[order], 4000)
    assert as_ids(shuffled, [ids[i] for i in order], lambda i: True) == as_ids(groups, ids, lambda i: True)


def test_no_validation_split_records_zero(tmp_path):
    ws = Workspace(tmp_path)
    docs = random_docs(40, 1000)
    cfg = ChunkConfig(seq_len=8, val_fraction=0.0)
    ref = run_chunk(cfg, make_tokens(ws, docs, 10), ws)
    zero = {"documents": 0, "tokens": 0, "blocks": 0, "tail_tokens": 0, "shards": 0, "bytes": 0, "groups": 0}
    assert ref.stats["val"] == zero | {"leftover_blocks": 0}
    assert read_shard(ref.dir / "val" / TAIL_FILE).column("tokens")[0].as_py() == []
    groups, streams = packed_groups(ref, docs, cfg, "train")
    assert sum(map(len, groups)) == len(docs)
    np.testing.assert_array_equal(np.concatenate(streams), expected_stream([d for g in groups for d in g]))


@pytest.mark.parametrize(("vocab_size", "dtype"), [(1000, pa.uint16()), (65536, pa.uint16()), (65537, pa.uint32())])
def test_token_width_follows_the_vocabulary(tmp_path, vocab_size, dtype):
    ws = Workspace(tmp_path)
    docs = random_docs(30, vocab_size, max_len=60)
    docs[1]["tokens"][0] = vocab_size - 1  # the largest id must survive
    cfg = ChunkConfig(seq_len=8, val_fraction=0.0)
    ref = run_chunk(cfg, make_tokens(ws, docs, 10, vocab_size), ws)
    assert ref.stats["dtype"] == dtype.to_pandas_dtype().__name__
    assert read_shard(shard_paths(ref.dir / "train")[0]).schema.field("tokens").type == pa.list_(dtype, 9)
    groups, streams = packed_groups(ref, docs, cfg, "train")
    np.testing.assert_array_equal(np.concatenate(streams), expected_stream([d for g in groups for d in g]))


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
    for change in ({"seq_len": 16}, {"val_fraction": 0.5}, {"split_salt": "x"}, {"group_blocks": 4}):
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
    # the documents repeat a phrase that validation documents hold too: not cut here
    cfg = ChunkConfig(seq_len=16, val_fraction=0.2, group_blocks=4, decontaminate={"enabled": False})
    ref = run_chunk(cfg, tokens, ws)

    tok = load_tokenizer(ref.dir / "tokenizer.json")
    docs = [
        {"id": r["id"], "text": r["text"], "tokens": np.array(t)}
        for r, t in zip(
            [r for part in parts for r in part],
            pa.concat_tables(read_shard(p) for p in shard_paths(tokens.dir / "tokens")).column("tokens").to_pylist(),
            strict=True,
        )
    ]
    for split in ("train", "val"):
        groups, streams = packed_groups(ref, docs, cfg, split)
        stream = np.concatenate(streams)
        ends = np.flatnonzero(stream == EOT)
        got = [tok.decode(p[:-1].tolist()) for p in np.split(stream, ends + 1)[:-1]]
        want = [d["text"] for g in groups for d in g]
        assert got == want and len(want) == ref.stats[split]["documents"]
        assert ref.stats[split]["bytes"] == sum(len(t.encode()) for t in want)
