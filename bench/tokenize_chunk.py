"""Benchmark: tokenize + chunk stage throughput against raw `tokenizers` encoding.

    .venv/bin/python bench/tokenize_chunk.py [--mb 32] [--threads N] [--repeat 3]

The corpus is pydoc-style text (module, class and function signatures with their docstrings)
rendered offline from the source of the standard library and then of the installed packages,
one document per module, written as a clean artifact under bench/out/ (made once, reused).
A tokenizer is trained on it once and then *given* to the stage, so training is not timed.

Figures (best of --repeat interleaved rounds, all with the same RAYON_NUM_THREADS):
  raw        `Tokenizer.encode_batch_fast` / `encode_batch` over the same texts, already in
             memory as Python strings, in batches of the stage's batch_size
  tokenize   `run_tokenize` end to end: read the clean shards, encode, write token shards
  chunk      `run_chunk` end to end: split, pack, write blocks
  paired     the per-shard work alone against raw encoding of the same shard, alternated shard
             by shard: the figure least disturbed by other work on a shared machine
The stage must reach at least 0.9x of raw encode_batch_fast (the call it makes).
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=32, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="RAYON_NUM_THREADS and thread-map workers")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=1000, help="documents per encode_batch call")
    ap.add_argument("--docs-per-shard", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=1024)
    return ap.parse_args()


# ----------------------------------------------------------------------------- the corpus


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    try:
        return f"{fn.name}({ast.unparse(fn.args)})"
    except Exception:
        return f"{fn.name}(...)"


def _doc(node: ast.AST, indent: str) -> list[str]:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    return [textwrap.indent(doc, indent), ""] if doc else []


def pydoc_text(module: str, source: str) -> str:
    """A pydoc-like plain-text page for one module, from its syntax tree (nothing is imported)."""
    tree = ast.parse(source)
    summary = (ast.get_docstring(tree) or "").strip().splitlines()
    lines = ["NAME", f"    {module}" + (f" - {summary[0]}" if summary else ""), ""]
    if ast.get_docstring(tree):
        lines += ["DESCRIPTION", *_doc(tree, "    ")]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if classes:
        lines.append("CLASSES")
        for c in classes:
            bases = ", ".join(ast.unparse(b) for b in c.bases) or "builtins.object"
            lines += [f"    class {c.name}({bases})", *_doc(c, "     |  ")]
            methods = [n for n in c.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            if methods:
                lines += ["     |  Methods defined here:", "     |"]
                for m in methods:
                    lines += [f"     |  {_signature(m)}", *_doc(m, "     |      ")]
            lines.append("")
    if functions:
        lines.append("FUNCTIONS")
        for f in functions:
            lines += [f"    {_signature(f)}", *_doc(f, "        ")]
    return "\n".join(lines) + "\n"


def _module_files() -> list[tuple[str, Path]]:
    out = []
    for root in (Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if "site-packages" in rel.parts[:-1] and root.name != "site-packages":
                continue
            out.append((".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path))
    return out


def build_corpus(target_bytes: int, docs_per_shard: int):
    """A clean artifact of pydoc-style pages, about `target_bytes` of text (cached under bench/out)."""
    import hashlib

    import pyarrow as pa

    from lm_core.schemas import CLEAN_DOC
    from lm_core.shards import shard_name, write_shard
    from lm_core.workspace import Workspace, fingerprint

    ws = Workspace(OUT / f"corpus-{target_bytes >> 20}mb")
    fp = fingerprint("clean", {"bench": "pydoc-ast", "bytes": target_bytes, "per_shard": docs_per_shard}, {}, 1)
    with ws.build("clean", fp, config={}, inputs={}) as build:
        if build.published:
            return build.ref
        print(f"building a {target_bytes >> 20} MB pydoc-style corpus (once) ...", flush=True)
        rows: list[dict] = []
        total, index = 0, 0

        def flush() -> None:
            nonlocal rows, index
            if rows:
                write_shard(build.dir / "docs" / shard_name(index), pa.Table.from_pylist(rows, schema=CLEAN_DOC))
                rows, index = [], index + 1

        for module, path in _module_files():
            if total >= target_bytes:
                break
            try:
                text = pydoc_text(module, path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
                continue
            if len(text) < 500:  # a page with no documentation to speak of
                continue
            n_bytes = len(text.encode("utf-8"))
            rows.append(
                {
                    "id": hashlib.sha256(text.encode()).hexdigest()[:32],
                    "url": f"pydoc://{module}",
                    "source": "pydoc",
                    "text": text,
                    "language": "en",
                    "n_words": len(text.split()),
                    "n_bytes": n_bytes,
                }
            )
            total += n_bytes
            if len(rows) == docs_per_shard:
                flush()
        flush()
        build.stats = {"rows": None, "bytes": total, "shards": index}
    return build.ref


# ----------------------------------------------------------------------------- timing


def trained_tokenizer(clean, vocab: int) -> Path:
    """A tokenizer trained on the corpus once, then given to the stage (training is not timed)."""
    from lm_core.shards import shard_paths
    from lm_core.tokenize.bpe import train_tokenizer
    from lm_core.tokenize.stage import _corpus_texts

    path = OUT / f"tokenizer-{clean.fingerprint}-{vocab}.json"
    if not path.is_file():
        print(f"training a {vocab}-token tokenizer on the corpus (once) ...", flush=True)
        train_tokenizer(_corpus_texts(shard_paths(clean.dir / "docs")), vocab).save(str(path))
    return path


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of all this process's threads, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def raw_encode(tok, texts: list[str], batch_size: int, method: str) -> int:
    encode = getattr(tok, method)
    return sum(
        sum(map(len, encode(texts[i : i + batch_size], add_special_tokens=False)))
        for i in range(0, len(texts), batch_size)
    )


def paired_per_shard(tok, clean, tok_path: Path, batch_size: int, scratch: Path) -> tuple[float, float]:
    """The stage's per-shard work (`encode_shard`: read, encode, build Arrow, write) against raw
    `encode_batch_fast` on the same shard's texts, alternated shard by shard so that a busy
    moment on a shared machine slows both alike. Returns (raw seconds, stage seconds), summed."""
    from lm_core.shards import read_shard, shard_paths
    from lm_core.tokenize.encode import EncodeJob, encode_shard

    raw = stage = 0.0
    for i, path in enumerate(shard_paths(clean.dir / "docs")):
        texts = read_shard(path).column("text").to_pylist()
        job = EncodeJob(str(tok_path), str(path), str(scratch / f"paired-{i:05d}.arrow"), batch_size)
        raw_fn = functools.partial(raw_encode, tok, texts, batch_size, "encode_batch_fast")
        stage_fn = functools.partial(encode_shard, job)
        for which in ("raw", "stage") if i % 2 == 0 else ("stage", "raw"):
            if which == "raw":
                raw += timed(raw_fn)[0]
            else:
                stage += timed(stage_fn)[0]
    return raw, stage


def thread_map(workers: int):
    def map_shards(fn, items):
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))

    return map_shards


def main() -> None:
    args = parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when tokenizers first encodes
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.path.insert(0, str(ROOT))
    from lm_core.chunk.stage import run_chunk
    from lm_core.config import ChunkConfig, TokenizeConfig
    from lm_core.progress import serial_map
    from lm_core.shards import read_shard, shard_paths
    from lm_core.tokenize.bpe import load_tokenizer
    from lm_core.tokenize.stage import run_tokenize
    from lm_core.workspace import Workspace

    clean = build_corpus(args.mb << 20, args.docs_per_shard)
    tok_path = trained_tokenizer(clean, args.vocab_size)
    tok = load_tokenizer(tok_path)
    texts = [t for p in shard_paths(clean.dir / "docs") for t in read_shard(p).column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(
        f"corpus: {len(texts)} documents, {mb:.1f} MB in {len(shard_paths(clean.dir / 'docs'))} shards; "
        f"vocab {args.vocab_size}; RAYON_NUM_THREADS={args.threads}; batch_size={args.batch_size}; "
        f"best of {args.repeat}"
    )

    tcfg = TokenizeConfig(path=str(tok_path), batch_size=args.batch_size)
    ccfg = ChunkConfig(seq_len=args.seq_len)
    scratch = Path(tempfile.mkdtemp(prefix="ws-", dir=OUT))
    ws = Workspace(scratch)

    def tokenize_stage(map_shards):
        shutil.rmtree(scratch / "tokenize", ignore_errors=True)
        return run_tokenize(tcfg, clean, ws, map_shards).stats["tokens"]

    def chunk_stage():
        shutil.rmtree(scratch / "chunk", ignore_errors=True)
        ref = run_chunk(ccfg, run_tokenize(tcfg, clean, ws), ws)
        return sum(ref.stats[s]["tokens"] for s in ("train", "val"))

    candidates = {
        "raw encode_batch_fast": lambda: raw_encode(tok, texts, args.batch_size, "encode_batch_fast"),
        "raw encode_batch": lambda: raw_encode(tok, texts, args.batch_size, "encode_batch"),
        "tokenize stage, serial map": lambda: tokenize_stage(serial_map),
        f"tokenize stage, {args.threads}-thread map": lambda: tokenize_stage(thread_map(args.threads)),
        "chunk stage": chunk_stage,
    }
    # Interleaved rounds, in alternating order: a busy moment on a shared machine hits one round
    # of every candidate alike instead of one candidate's every run.
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in candidates}
    paired: list[float] = []
    load_before = os.getloadavg()[0]
    try:
        for round_ in range(args.repeat):
            for name in list(candidates)[:: 1 if round_ % 2 == 0 else -1]:
                runs[name].append(timed(candidates[name]))
            raw_s, stage_s = paired_per_shard(tok, clean, tok_path, args.batch_size, scratch)
            paired.append(raw_s / stage_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"load average (1 min) before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(f"\n{'best of ' + str(args.repeat):38} {'seconds':>8} {'cpu s':>7} {'Mtokens/s':>10} {'MB/s':>7}")
    for name, timings in runs.items():
        seconds, cpu, n = min(timings)
        print(f"{name:38} {seconds:8.2f} {cpu:7.2f} {n / seconds / 1e6:10.3f} {mb / seconds:7.2f}")

    def wall(name: str) -> list[float]:
        return [t[0] for t in runs[name]]

    stage = wall("tokenize stage, serial map")
    both = [t + c for t, c in zip(stage, wall("chunk stage"), strict=True)]
    print(f"\n{'throughput ratio (raw seconds / stage seconds)':50} {'best-of':>8} {'median of rounds':>17}")
    for label, ours, raw in (
        ("tokenize stage / raw encode_batch_fast", stage, "raw encode_batch_fast"),
        ("tokenize stage / raw encode_batch", stage, "raw encode_batch"),
        ("tokenize + chunk / raw encode_batch_fast", both, "raw encode_batch_fast"),
    ):
        per_round = [r / o for r, o in zip(wall(raw), ours, strict=True)]
        print(f"{label:50} {min(wall(raw)) / min(ours):7.3f}x {statistics.median(per_round):16.3f}x")
    print(f"{'per-shard work / raw, same shards, alternated':50} {'':8} {statistics.median(paired):16.3f}x")
    print("target: >= 0.9x")


if __name__ == "__main__":
    main()
