"""Benchmark: how many training blocks survive a one-document change, what tails cost, and what
decontamination cuts, on a demo corpus.

    .venv/bin/python bench/stable_blocks.py [--config configs/small.yaml] [--changes 5] [--set k=v ...]

Runs the data stages (cached when already done). Then, for each of `--changes` training documents
(the first in crawl order, then others spread over the corpus), makes a copy of the tokenize
artifact where that document has one more token and a new id (a page edited between two
nightly crawls, the tokenizer kept) and chunks both. Figures:

  identical   share of the changed corpus's train blocks found byte for byte among the
              original's: grouped packing (this stage, for each --group-blocks) against the
              packing before it (the documents of a split joined in crawl order, emulated here)
  tail        tokens in no block; and what keeping each group's leftover as a tail (instead of
              packing the leftovers together) would have lost
  cut         share of the training text decontamination removes against the validation
              documents: token windows (the stage, with and without the common-text exemption)
              against GPT-3's lowercased word windows (computed here on the clean text)
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter

import numpy as np
import pyarrow as pa

from lm_core.chunk.decontaminate import VALIDATION, Decontaminator
from lm_core.chunk.pack import split_is_val
from lm_core.chunk.stage import run_chunk
from lm_core.clean.stage import run_clean
from lm_core.config import DecontaminateConfig, load_config
from lm_core.crawl.stage import run_crawl
from lm_core.shards import read_shard, shard_name, shard_paths, write_shard
from lm_core.tokenize.bpe import load_tokenizer, vocab_size
from lm_core.tokenize.stage import TOKENIZER_FILE, TOKENS_DIR, run_tokenize
from lm_core.workspace import Workspace, fingerprint

WORD = re.compile(r"\w+")


def changed_tokens(ws: Workspace, tokens, victim: int):
    """A tokenize artifact like `tokens` where document `victim` (in shard order) has one more
    token, in its middle, and a new id."""
    fp = fingerprint("tokenize", {"bench": "stable_blocks", "victim": victim}, {"tokenize": tokens.fingerprint}, 0)
    with ws.build("tokenize", fp, config={}, inputs={"tokenize": tokens.fingerprint}) as b:
        if b.published:
            return b.ref
        (b.dir / TOKENIZER_FILE).write_bytes((tokens.dir / TOKENIZER_FILE).read_bytes())
        start = 0
        for index, path in enumerate(shard_paths(tokens.dir / TOKENS_DIR)):
            table = read_shard(path)
            if start <= victim < start + table.num_rows:
                rows = table.to_pylist()
                doc = rows[victim - start]
                middle = len(doc["tokens"]) // 2
                doc["tokens"].insert(middle, doc["tokens"][middle])
                doc["id"] = f"{doc['id']}-edited"
                table = pa.Table.from_pylist(rows, schema=table.schema)
            write_shard(b.dir / TOKENS_DIR / shard_name(index), table)
            start += table.num_rows
    return b.ref


def documents(tokens) -> pa.Table:
    return pa.concat_tables(read_shard(p) for p in shard_paths(tokens.dir / TOKENS_DIR))


def blocks_of(ref) -> Counter:
    out: Counter = Counter()
    for p in shard_paths(ref.dir / "train"):
        col = read_shard(p).column("tokens").combine_chunks()
        out.update(map(bytes, col.flatten().to_numpy().reshape(len(col), -1)))
    return out


def crawl_order_blocks(tokens, cfg) -> tuple[Counter, int]:
    """The train blocks as the stage made them before groups (documents in crawl order), and
    its tail's length."""
    docs = documents(tokens)
    train = ~split_is_val(docs.column("id").to_pylist(), cfg.split_salt, cfg.val_fraction)
    rows = docs.column("tokens").to_pylist()
    stream = np.concatenate([np.append(np.asarray(t, np.uint32), 0) for t, k in zip(rows, train, strict=True) if k])
    n = cfg.seq_len + 1
    whole = len(stream) // n * n
    return Counter(map(bytes, stream[:whole].reshape(-1, n))), len(stream) - whole


def identical(before: Counter, after: Counter) -> float:
    return sum((before & after).values()) / sum(after.values())


def group_tails(ref, cfg) -> int:
    """Tokens the groups' leftovers hold: what per-group tails would leave out of blocks."""
    s = ref.stats["train"]
    return s["tokens"] - (s["blocks"] - s["leftover_blocks"]) * (cfg.seq_len + 1)


def word_cut(texts: list[str], is_val: np.ndarray, n: int, max_docs: int | None) -> float:
    """Share of training bytes under a lowercased n-word window shared with a validation text."""

    def windows(text):
        words = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(text)]
        return words, [hash(tuple(w[2] for w in words[i : i + n])) for i in range(len(words) - n + 1)]

    evaluation = set()
    for text, v in zip(texts, is_val, strict=True):
        if v:
            evaluation.update(windows(text)[1])
    train = [windows(t) for t, v in zip(texts, is_val, strict=True) if not v]
    counts = Counter(h for _, hs in train for h in set(hs) & evaluation)
    cut = {h for h, c in counts.items() if max_docs is None or c <= max_docs}
    removed = total = 0
    for text, (words, hs) in zip([t for t, v in zip(texts, is_val, strict=True) if not v], train, strict=True):
        covered = np.zeros(len(text), dtype=bool)
        for i, h in enumerate(hs):
            if h in cut:
                covered[words[i][0] : words[i + n - 1][1]] = True
        removed += len("".join(np.array(list(text))[covered]).encode()) if covered.any() else 0
        total += len(text.encode())
    return removed / total


def token_cut(tokens, cfg, max_docs: int | None) -> tuple[float, float]:
    """(share of training tokens, share of training bytes) the stage's cut removes."""
    tok = load_tokenizer(tokens.dir / TOKENIZER_FILE)
    docs = documents(tokens)
    rows = [np.asarray(t, dtype=np.int64) for t in docs.column("tokens").to_pylist()]
    is_val = split_is_val(docs.column("id").to_pylist(), cfg.split_salt, cfg.val_fraction)
    rule = DecontaminateConfig(ngram=cfg.decontaminate.ngram, max_train_docs=max_docs)
    decon = Decontaminator(rule, vocab_size(tok), 0, tok.decode)
    decon.add_set(VALIDATION, (np.append(r, 0) for r, v in zip(rows, is_val, strict=True) if v))
    decon.freeze()
    train = [np.append(r, 0) for r, v in zip(rows, is_val, strict=True) if not v]
    for r in train:
        decon.count(r)
    before = after = 0
    for r in train:
        before += len(tok.decode(r.tolist()).encode())
        after += len(tok.decode(decon.cut(r, str).tolist()).encode())
    return decon.totals["tokens"] / sum(len(r) - 1 for r in train), 1 - after / before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/small.yaml")
    ap.add_argument("--changes", type=int, default=5, help="documents changed, one at a time")
    ap.add_argument("--group-blocks", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    ws = Workspace(cfg.workspace)
    clean = run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws)
    tokens = run_tokenize(cfg.tokenize, clean, ws)
    docs = documents(tokens)
    train = np.flatnonzero(~split_is_val(docs.column("id").to_pylist(), cfg.chunk.split_salt, cfg.chunk.val_fraction))
    victims = train[np.linspace(0, len(train) - 1, args.changes + 1).astype(int)[:-1]]  # the first, then spread
    changed = [changed_tokens(ws, tokens, int(v)) for v in victims]
    print(f"{cfg.name}: {docs.num_rows} documents, {len(train)} for training; changing documents {victims.tolist()}")

    before, tail = crawl_order_blocks(tokens, cfg.chunk)
    shares = [identical(before, crawl_order_blocks(c, cfg.chunk)[0]) for c in changed]
    print(
        f"  crawl order (before): {sum(before.values())} train blocks, tail {tail} tokens; "
        f"identical after one change: mean {np.mean(shares):.1%}, min {min(shares):.1%}"
    )
    for g in args.group_blocks:
        c = cfg.chunk.model_copy(update={"group_blocks": g})
        t0 = time.perf_counter()
        base = run_chunk(c, tokens, ws, evaluation=cfg.evaluate)
        seconds = time.perf_counter() - t0
        blocks = blocks_of(base)
        shares = [identical(blocks, blocks_of(run_chunk(c, t, ws, evaluation=cfg.evaluate))) for t in changed]
        s = base.stats["train"]
        lost = group_tails(base, cfg.chunk)
        print(
            f"  group_blocks={g}: {s['blocks']} train blocks in {s['groups']} groups ({s['leftover_blocks']} of "
            f"leftovers), tail {s['tail_tokens']} tokens (per-group tails would lose {lost}, "
            f"{lost / s['tokens']:.2%}); identical after one change: mean {np.mean(shares):.1%}, "
            f"min {min(shares):.1%}; chunk {seconds:.1f} s"
        )

    clean_docs = pa.concat_tables(read_shard(p) for p in shard_paths(clean.dir / "docs"))
    texts = clean_docs.column("text").to_pylist()
    is_val = split_is_val(clean_docs.column("id").to_pylist(), cfg.chunk.split_salt, cfg.chunk.val_fraction)
    n = cfg.chunk.decontaminate.ngram
    for max_docs in (None, 10):  # every shared window; or with GPT-3's common-text exemption
        share_tokens, share_bytes = token_cut(tokens, cfg.chunk, max_docs)
        words = word_cut(texts, is_val, n, max_docs)
        print(
            f"  cut against validation documents, max_train_docs={max_docs}: {n}-token windows "
            f"{share_tokens:.2%} of training tokens ({share_bytes:.2%} of bytes); {n}-word windows "
            f"{words:.2%} of bytes"
        )


if __name__ == "__main__":
    main()
