"""Clean-stage throughput and peak memory as the corpus grows.

    .venv/bin/python bench/clean_throughput.py                  # 50, 100, 200 MB of HTML
    .venv/bin/python bench/clean_throughput.py --sizes 20,400 --workers 2

1. Builds an HTML corpus offline from real pages: pydoc's page (as `python -m pydoc -p` serves
   it) for every importable module of the standard library and of the installed packages.
   Pages are rendered in child processes, since rendering imports the module (one that hangs,
   crashes or acts on import is skipped), and cached under `--out/pages`.
2. For each size, takes pages in a fixed shuffled order until that many MB of HTML (so each
   corpus extends the smaller ones) and writes them as RAW_DOC shards: a crawl artifact.
3. Cleans each corpus in a fresh process, which reports its wall time and peak RSS.

It prints documents/s, MB/s and peak RSS per size, and the ratio of peak RSS at the largest
size to the smallest: near 1 when memory stays flat as the corpus grows.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Modules that act on import (open a browser, print, want a display), and test suites.
SKIP = {
    "antigravity",
    "this",
    "turtledemo",
    "idlelib",
    "tkinter",
    "turtle",
    "__main__",
    "__phello__",
    "pydoc",
    "test",
    "tests",
    "testing",
    "conftest",
    "setup",
    "_pytest",
    "pytest",
    "pip",
    "setuptools",
}
MB = 1_000_000
DOCS_PER_SHARD = 500  # the crawl's default
MODULE_TIMEOUT_S = 30  # a page that takes longer to render is skipped

# ----------------------------------------------------------------------------- rendering pages

RENDER_CHILD = r"""
import contextlib, io, os, pydoc, signal, sys, warnings
warnings.filterwarnings("ignore")
out_dir = sys.argv[1]
class Timeout(BaseException): pass
def on_alarm(*_): raise Timeout()
signal.signal(signal.SIGALRM, on_alarm)
for name in sys.stdin.read().split():
    path = os.path.join(out_dir, name + ".html")
    print(name, flush=True)  # the parent knows which module to skip if we die here
    if os.path.exists(path):
        continue
    signal.alarm(15)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            page = pydoc._url_handler(name + ".html", "text/html")
    except BaseException:
        continue
    finally:
        signal.alarm(0)
    if "no Python documentation found" not in page and "<title>Pydoc: Error" not in page:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(path + ".tmp", path)
"""

LIST_CHILD = r"""
import pkgutil, site, sys, warnings
warnings.filterwarnings("ignore")
skip = set(sys.argv[1].split(","))
names = set(n for n in sys.stdlib_module_names if n not in skip)
for info in pkgutil.iter_modules(site.getsitepackages()):
    if info.name not in skip and not info.name.startswith("_"):
        names.add(info.name)
def walk(pkg):
    try:
        mod = __import__(pkg, fromlist=["_"])
    except BaseException:
        return
    for info in pkgutil.iter_modules(getattr(mod, "__path__", []) or [], pkg + "."):
        if any(part in skip for part in info.name.split(".")):
            continue
        print(info.name, flush=True)
        if info.ispkg:
            walk(info.name)
for name in sorted(names):
    print(name, flush=True)
    walk(name)
"""


def list_modules(cache: Path) -> list[str]:
    listing = cache / "modules.txt"
    if not listing.exists():
        print("listing importable modules (imports every package once) ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-c", LIST_CHILD, ",".join(sorted(SKIP))],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
            env=_quiet_env(),
        )
        names = sorted(set(proc.stdout.split()))
        listing.write_text("\n".join(names))
    return listing.read_text().split()


def _quiet_env() -> dict:
    return {**os.environ, "DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore", "DISPLAY": ""}


def _render_batch(pages_dir: Path, names: list[str]) -> tuple[int, str | None]:
    """Render `names` in one child; return how many it got through, and the module it hung or
    died on (None if it finished)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RENDER_CHILD, str(pages_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_quiet_env(),
    )
    proc.stdin.write("\n".join(names))
    proc.stdin.close()
    announced: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [announced.put(line.strip()) for line in proc.stdout], daemon=True).start()
    done, current = 0, None
    while True:
        try:
            current = announced.get(timeout=MODULE_TIMEOUT_S)
            done += 1
        except queue.Empty:
            if proc.poll() is None:  # stuck in an import that ignores signals
                proc.kill()
            proc.wait()
            return done, (current if proc.returncode != 0 else None)
        if done == len(names):
            try:
                proc.wait(timeout=MODULE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return done, (current if proc.returncode != 0 else None)


def render_pages(cache: Path, names: list[str], want_bytes: int) -> list[Path]:
    """Render pages until `want_bytes` of HTML are cached (or every module has been tried)."""
    pages_dir = cache / "pages"
    pages_dir.mkdir(parents=True, exist_ok=True)
    failed_file = cache / "failed.txt"
    failed = set(failed_file.read_text().split()) if failed_file.exists() else set()
    todo = [n for n in names if n not in failed and not (pages_dir / f"{n}.html").exists()]
    have = sum(p.stat().st_size for p in pages_dir.glob("*.html"))
    while todo and have < want_bytes:
        chunk = todo[:100]
        done, culprit = _render_batch(pages_dir, chunk)
        if culprit is not None:  # skip the module it hung or died on, carry on after it
            failed.add(culprit)
            failed_file.write_text("\n".join(sorted(failed)))
            done = max(done, 1)
        todo = todo[done:]
        have = sum(p.stat().st_size for p in pages_dir.glob("*.html"))
        print(f"  rendered pages: {have / MB:.0f} MB, {len(todo)} modules left to try", flush=True)
    return sorted(pages_dir.glob("*.html"))


# ----------------------------------------------------------------------------- raw corpora


def build_crawl(ws_root: Path, pages: list[Path], size_bytes: int):
    """A crawl artifact holding the first `size_bytes` of pages (in a fixed shuffled order)."""
    import pyarrow as pa

    from lm_core.config import CrawlConfig
    from lm_core.schemas import RAW_DOC
    from lm_core.shards import shard_name, write_shard
    from lm_core.workspace import Workspace, fingerprint

    # what a crawl would have fetched: it refuses responses above max_bytes
    order = [p for p in pages if p.stat().st_size <= CrawlConfig().max_bytes]
    random.Random(1337).shuffle(order)
    # Peak memory follows the largest single page (its parse tree), not the corpus size: start
    # every corpus with the same largest pages, so that what differs between sizes is only how
    # much there is, and the figures show whether memory grows with it.
    largest = sorted(order, key=lambda p: p.stat().st_size, reverse=True)[:3]
    order = largest + [p for p in order if p not in largest]
    ws = Workspace(ws_root)
    fp = fingerprint("crawl", {"bench_bytes": size_bytes, "pages": len(order)}, {}, 1)
    with ws.build("crawl", fp, config={"bench_bytes": size_bytes}, inputs={}) as build:
        if build.published:
            return build.ref
        rows, total, shard, n = [], 0, 0, 0
        when = datetime(2024, 1, 1, tzinfo=UTC)
        while total < size_bytes:
            page = order[n % len(order)]  # wraps round (duplicates) only if the pages run out
            body = page.read_bytes()
            rows.append(
                {
                    "url": f"http://127.0.0.1:8000/{page.name}?copy={n // len(order)}",
                    "source": "pydoc",
                    "fetched_at": when,
                    "status": 200,
                    "content_type": "text/html",
                    "declared_encoding": "utf-8",
                    "detected_encoding": None,
                    "body": body,
                }
            )
            total += len(body)
            n += 1
            if len(rows) == DOCS_PER_SHARD:
                write_shard(build.dir / "docs" / shard_name(shard), pa.Table.from_pylist(rows, RAW_DOC))
                rows, shard = [], shard + 1
        if rows:
            write_shard(build.dir / "docs" / shard_name(shard), pa.Table.from_pylist(rows, RAW_DOC))
        build.stats = {
            "rows": n,
            "bytes_in": total,
            "unique_pages": min(n, len(order)),
            "largest_page_bytes": max(p.stat().st_size for p in order[: min(n, len(order))]),
        }
    return build.ref


# ----------------------------------------------------------------------------- one measured run


def child_run(ws_root: str, crawl_fp: str, workers: int) -> None:
    """In a fresh process: clean one crawl artifact; print timings and peak RSS as JSON."""
    from concurrent.futures import ProcessPoolExecutor

    from lm_core.clean import run_clean
    from lm_core.config import CleanConfig
    from lm_core.progress import serial_map
    from lm_core.workspace import Workspace

    ws = Workspace(ws_root)
    crawl = ws.ref("crawl", crawl_fp)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    map_shards = serial_map if pool is None else (lambda fn, items: list(pool.map(fn, items)))
    started = time.perf_counter()
    ref = run_clean(CleanConfig(), crawl, ws, map_shards=map_shards)
    seconds = time.perf_counter() - started
    if pool is not None:
        pool.shutdown()  # workers count in RUSAGE_CHILDREN only once they have exited
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest worker
    result = {"seconds": seconds, "peak_rss_mb": self_kb / 1024, "worker_peak_rss_mb": children_kb / 1024}
    print(json.dumps({**result, "stats": ref.stats}))


def measure(ws_root: Path, crawl_fp: str, workers: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(ws_root), crawl_fp, str(workers)],
        capture_output=True,
        text=True,
        env=_quiet_env(),
    )
    if proc.returncode != 0:
        raise SystemExit(f"clean run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,100,200", help="corpus sizes in MB of HTML, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="processes for the per-shard phases (1: serial)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "clean")
    parser.add_argument("--child", nargs=3, metavar=("WORKSPACE", "CRAWL_FP", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(args.child[0], args.child[1], int(args.child[2]))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    pages = render_pages(args.out, list_modules(args.out), max(sizes) * MB)
    unique_mb = sum(p.stat().st_size for p in pages) / MB
    print(f"corpus: {len(pages)} distinct pydoc pages, {unique_mb:.0f} MB of HTML")

    rows = []
    for size in sizes:
        crawl = build_crawl(args.out / f"ws-{size}", pages, size * MB)
        # a fresh clean each time: drop a published clean artifact of an earlier run
        for old in (args.out / f"ws-{size}" / "clean").glob("*"):
            if old.is_dir():
                import shutil

                shutil.rmtree(old)
        result = measure(args.out / f"ws-{size}", crawl.fingerprint, args.workers)
        stats = result["stats"]
        mb_in = stats["bytes_in"] / MB
        rows.append(
            {
                "size_mb": round(mb_in, 1),
                "docs": stats["documents_in"],
                "kept": stats["kept"],
                "largest_doc_mb": round(crawl.stats["largest_page_bytes"] / MB, 2),
                "seconds": round(result["seconds"], 1),
                "docs_per_s": round(stats["documents_in"] / result["seconds"], 1),
                "mb_per_s": round(mb_in / result["seconds"], 3),
                "peak_rss_mb": round(result["peak_rss_mb"], 0),
                "worker_peak_rss_mb": round(result["worker_peak_rss_mb"], 0),
                "phase_seconds": stats["seconds"],
                "rejected_by_reason": stats["rejected_by_reason"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    print(f"\nclean stage, {args.workers} worker process(es), {os.cpu_count()} CPUs")
    print(
        f"{'MB in':>8} {'docs':>6} {'kept':>6} {'largest doc MB':>15} {'s':>8} {'docs/s':>8} {'MB/s':>7} "
        f"{'peak RSS MB':>12}"
    )
    for r in rows:
        r["largest_process_rss_mb"] = max(r["peak_rss_mb"], r["worker_peak_rss_mb"])  # the stage or a worker
        print(
            f"{r['size_mb']:>8} {r['docs']:>6} {r['kept']:>6} {r['largest_doc_mb']:>15} {r['seconds']:>8} "
            f"{r['docs_per_s']:>8} {r['mb_per_s']:>7} {r['largest_process_rss_mb']:>12}"
        )
    if len(rows) > 1:
        ratio = rows[-1]["largest_process_rss_mb"] / rows[0]["largest_process_rss_mb"]
        print(f"peak RSS at {rows[-1]['size_mb']} MB / at {rows[0]['size_mb']} MB: {ratio:.2f}")
    (args.out / f"results-w{args.workers}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
