"""Incremental clean after a refresh in which one word of one page changed; work split by size.

    .venv/bin/python bench/incremental_clean.py                   # 500 pages, serial
    .venv/bin/python bench/incremental_clean.py --workers 2 --skip-split
    .venv/bin/python bench/incremental_clean.py --skip-refresh --docs-per-shard 50

1. A site of `--pages` real HTML pages: pydoc's page of as many modules (rendered as
   bench/clean_throughput.py renders them, cached under bench/out/clean/pages), served over HTTP
   with an index linking them, crawled by the crawl stage as snapshot s1, cleaned, tokenized.
2. One word of one page changed; crawled as snapshot s2, cleaned (incremental: the outcomes of
   every unchanged page are reused from s1's clean artifact) and tokenized (s1's tokenizer kept).
3. s2's crawl cleaned again from scratch, in a workspace of its own.

It prints the clean times from scratch and incremental and their ratio (target: <= 10%), whether
the incremental artifact is byte-identical to the one from scratch, how many documents were
cleaned, and whether the tokenizer was reused.

4. Work split by size: the same pages plus one huge page (the biggest pages' bodies joined into
   one page of `--huge-mb`), cleaned from scratch in jobs of `clean.docs_per_shard` documents (as
   before `clean.bytes_per_job`, set here to more than the corpus, and submitted in URL order) and
   in jobs of `bytes_per_job` bytes, biggest first. Jobs run one by one and their CPU time is
   measured; it prints the longest, their sum and the wall time they make on 2 and 4 workers
   (this project's CI machine has 2 cores, shared: the wall time of a parallel run there would
   measure the neighbours), and whether both splits give the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("DO_NOT_TRACK", "true")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from clean_throughput import MB, list_modules, render_pages  # noqa: E402

from lm_core.clean.pipeline import clean_document  # noqa: E402
from lm_core.clean.stage import run_clean  # noqa: E402
from lm_core.config import CleanConfig, CrawlConfig, TokenizeConfig  # noqa: E402
from lm_core.crawl.stage import run_crawl  # noqa: E402
from lm_core.progress import NullProgress, serial_map  # noqa: E402
from lm_core.schemas import RAW_DOC  # noqa: E402
from lm_core.shards import read_shard, shard_name, write_shard  # noqa: E402
from lm_core.tokenize.stage import run_tokenize  # noqa: E402
from lm_core.workspace import MANIFEST, Workspace, fingerprint  # noqa: E402


def site_pages(cache: Path, n: int) -> list[Path]:
    """`n` rendered pydoc pages (rendering more until there are enough), smallest name first."""
    names = list_modules(cache)
    want = 20 * MB
    while True:
        pages = render_pages(cache, names, want)
        if len(pages) >= n or want > 400 * MB:
            return sorted(pages)[:n]
        want += 20 * MB


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def change_one_word(page: Path) -> str:
    """Replace the first long lowercase word of the page's main text; return what changed."""
    body = page.read_text(encoding="utf-8")
    start = body.index("<dd>") if "<dd>" in body else body.index("<body")  # pydoc: docstrings in <dd>
    for word in body[start:].split():
        if word.isalpha() and word.islower() and len(word) > 6:
            page.write_text(body.replace(f" {word} ", " zeppelin ", 1), encoding="utf-8")
            return f"{page.name}: {word!r} -> 'zeppelin'"
    raise SystemExit(f"no word to change in {page}")


def published(ref) -> dict[str, bytes]:
    files = sorted(p for p in ref.dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {str(p.relative_to(ref.dir)): p.read_bytes() for p in files}


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def _warm_up(_: int) -> None:
    """Load the cleaning pipeline in a worker (and hold it a moment, so that each worker gets one)."""
    clean_document(b"<html><body><p>warm up</p></body></html>", "text/html", "utf-8", None, CleanConfig())
    time.sleep(0.5)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes with the pipeline loaded, so that no timed run pays for the imports."""
    pool = ProcessPoolExecutor(max_workers=workers)
    list(pool.map(_warm_up, range(workers)))
    return pool


def process_map(pool: ProcessPoolExecutor):
    """A `MapShards` on a process pool: submitted in the order given (the stage gives biggest first)."""

    def map_shards(fn, items, progress=NullProgress()):
        futures = [pool.submit(fn, item) for item in items]
        return [f.result() for f in futures]

    return map_shards


# ----------------------------------------------------------------------------- 1-3: a refresh


def refresh(pages: list[Path], root: Path, map_shards) -> None:
    folder = root / "site"
    folder.mkdir()
    for p in pages:
        shutil.copyfile(p, folder / p.name)
    links = "".join(f'<li><a href="{p.name}">{p.stem}</a></li>' for p in pages)
    (folder / "index.html").write_text(f"<html><body><h1>Modules</h1><ul>{links}</ul></body></html>")
    clean_cfg, tok_cfg = CleanConfig(), TokenizeConfig()
    ws = Workspace(root / "ws")
    with serve(folder) as url:
        crawl_cfg = CrawlConfig(urls=[url], max_depth=1, max_pages=len(pages) + 1, allow_loopback=True)
        s1, crawl_s = timed(run_crawl, crawl_cfg, ws, snapshot="s1")
        print(f"s1: crawled {s1.stats['rows']} pages, {s1.stats['doc_bytes'] / MB:.1f} MB, in {crawl_s:.1f} s")
        c1, first_s = timed(run_clean, clean_cfg, s1, ws, map_shards=map_shards)
        t1 = run_tokenize(tok_cfg, c1, ws, map_shards=map_shards)
        print(f"s1: cleaned in {first_s:.1f} s ({c1.stats['kept']} kept); tokenizer {t1.stats['tokenizer']}")

        what = change_one_word(folder / pages[len(pages) // 2].name)
        s2 = run_crawl(crawl_cfg, ws, snapshot="s2")
    c2, incremental_s = timed(run_clean, clean_cfg, s2, ws, map_shards=map_shards)
    t2 = run_tokenize(tok_cfg, c2, ws, map_shards=map_shards)

    scratch = Workspace(root / "scratch")
    shutil.copytree(s2.dir, scratch.artifact_dir("crawl", s2.fingerprint))
    fresh, full_s = timed(run_clean, clean_cfg, scratch.ref("crawl", s2.fingerprint), scratch, map_shards=map_shards)

    print(f"\nrefresh: one word of one page changed ({what})")
    rows = [
        ("clean from scratch", f"{full_s:8.2f} s   ({fresh.stats['cleaned']} documents cleaned)"),
        ("clean incremental", f"{incremental_s:8.2f} s   ({c2.stats['cleaned']} cleaned, {c2.stats['reused']} reused)"),
        ("incremental / scratch", f"{100 * incremental_s / full_s:8.1f} %  (target <= 10 %)"),
        ("byte-identical to scratch", "yes" if published(c2) == published(fresh) else "NO"),
        ("tokenizer", f"{t2.stats['tokenizer']} (from {t2.manifest()['inputs'].get('tokenizer', '-')})"),
        ("outcomes kept for reuse", f"{outcomes_bytes(c2) / MB:8.2f} MB of {c2.manifest()['bytes'] / MB:.2f} MB"),
    ]
    for name, value in rows:
        print(f"  {name:26} {value}")


def outcomes_bytes(ref) -> int:
    return sum(p.stat().st_size for p in (ref.dir / "outcomes").iterdir())


# ----------------------------------------------------------------------------- 4: split by size


def huge_crawl(pages: list[Path], ws: Workspace, huge_mb: float):
    """The pages plus one huge page, as a crawl artifact (no server needed)."""
    parts, size = [], 0
    for p in sorted(pages, key=lambda p: -p.stat().st_size):
        body = p.read_text(encoding="utf-8")
        inner = body[body.find("<body") : body.rfind("</body>")].split(">", 1)[-1]
        parts.append(inner)
        size += len(inner)
        if size >= huge_mb * MB:
            break
    huge = f"<!DOCTYPE html><html><head><title>all in one</title></head><body>{''.join(parts)}</body></html>"
    middle = sorted(pages)[len(pages) // 2].stem  # in URL order, the huge page lies mid-corpus
    bodies = {p.name: p.read_bytes() for p in pages} | {f"{middle}.huge.html": huge.encode()}
    when = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {"url": f"http://127.0.0.1:8000/{name}", "source": "urls", "fetched_at": when, "status": 200,
         "content_type": "text/html", "declared_encoding": "utf-8", "detected_encoding": None, "body": body}
        for name, body in sorted(bodies.items())
    ]  # fmt: skip
    fp = fingerprint("crawl", {"bench": "huge", "pages": len(rows), "huge": len(huge)}, {}, 1)
    with ws.build("crawl", fp, config={}, inputs={}) as build:
        if not build.published:
            write_shard(build.dir / "docs" / shard_name(0), pa.Table.from_pylist(rows, RAW_DOC))
            build.stats = {"rows": len(rows), "huge_bytes": len(huge)}
    return build.ref


class TimedMap:
    """A `MapShards` that runs jobs one after another, in the order given, and records the CPU
    time of each filter job (CPU time: on shared cores, wall time would measure the neighbours)."""

    def __init__(self):
        self.jobs: list[tuple[int, float]] = []  # (job index, CPU seconds), in the order run

    def __call__(self, fn, items, progress=NullProgress()):
        results = []
        for item in items:
            started = time.process_time()
            results.append(fn(item))
            if fn.__name__ == "filter_shard":
                self.jobs.append((item.index, time.process_time() - started))
        return results


def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of jobs of these durations on `workers` workers, each taking the next job in
    order as soon as it is free (what the thread, process, Dask and Ray runners do)."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def split_by_size(pages: list[Path], root: Path, huge_mb: float, docs_per_shard: int) -> None:
    """Phase 1's jobs timed one by one (this machine's cores are shared: wall times of parallel
    runs would measure the neighbours), and the wall time they make on 2 and 4 workers."""
    ws = Workspace(root / "huge")
    crawl = huge_crawl(pages, ws, huge_mb)
    docs = read_shard(crawl.dir / "docs" / shard_name(0))
    huge = docs.filter(pc.ends_with(docs.column("url"), ".huge.html"))
    _warm_up(0)  # the pipeline's first call loads models
    started = time.process_time()
    clean_document(huge.column("body")[0].as_py(), "text/html", "utf-8", None, CleanConfig())
    alone_s = time.process_time() - started
    print(f"\nsplit by size: {len(pages)} pages + one page of {crawl.stats['huge_bytes'] / MB:.1f} MB", end="")
    print(f" (cleaned alone in {alone_s:.1f} s), docs_per_shard={docs_per_shard}")
    print(f"  {'filter jobs':44} {'jobs':>5} {'longest s':>10} {'sum s':>8} {'2 workers s':>12} {'4 workers s':>12}")
    results = []
    for name, bytes_per_job in (
        ("of docs_per_shard documents (before)", 10**12),
        ("of bytes_per_job bytes, biggest first", CleanConfig().bytes_per_job),
    ):
        cfg = CleanConfig(docs_per_shard=docs_per_shard, bytes_per_job=bytes_per_job)
        other = Workspace(root / f"huge-{bytes_per_job}")
        shutil.copytree(crawl.dir, other.artifact_dir("crawl", crawl.fingerprint))
        jobs = TimedMap()
        results.append(published(run_clean(cfg, other.ref("crawl", crawl.fingerprint), other, map_shards=jobs)))
        # before, jobs were submitted in URL order; now biggest first
        t = [seconds for _, seconds in (sorted(jobs.jobs) if bytes_per_job == 10**12 else jobs.jobs)]
        print(f"  {name:44} {len(t):5} {max(t):10.1f} {sum(t):8.1f} {makespan(t, 2):12.1f} {makespan(t, 4):12.1f}")
    print(f"  same bytes both ways: {'yes' if results[0] == results[1] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="processes for parts 1-3 (1: serial)")
    parser.add_argument("--huge-mb", type=float, default=2.5, help="size of the huge page of part 4")
    parser.add_argument("--docs-per-shard", type=int, default=CleanConfig().docs_per_shard, help="for part 4")
    parser.add_argument("--skip-split", action="store_true", help="only the refresh (parts 1-3)")
    parser.add_argument("--skip-refresh", action="store_true", help="only the split by size (part 4)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "clean")
    args = parser.parse_args()

    pages = site_pages(args.out, args.pages)
    print(f"site: {len(pages)} pydoc pages, {sum(p.stat().st_size for p in pages) / MB:.1f} MB of HTML", flush=True)
    root = Path(tempfile.mkdtemp(prefix="lmforge-incremental-"))
    try:
        if not args.skip_refresh:
            with process_pool(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool:
                refresh(pages, root, process_map(pool) if pool else serial_map)
        if not args.skip_split:
            split_by_size(pages, root, args.huge_mb, args.docs_per_shard)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
