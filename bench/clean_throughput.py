"""Clean-stage throughput and peak memory as the corpus grows, beside datatrove's equivalent.

    .venv/bin/python bench/clean_throughput.py                          # 50, 100, 200 MB, 2 workers
    .venv/bin/python bench/clean_throughput.py --sizes 50,1000 --workers 2
    .venv/bin/python bench/clean_throughput.py --sizes 50 --sides lmforge
    .venv/bin/python bench/clean_throughput.py --sizes 50 --repeat 5           # 5 rounds, sides alternating

1. Builds an HTML corpus offline from real pages: pydoc's page (as `python -m pydoc -p` serves
   it) for every importable module of the standard library and of the installed packages.
   Pages are rendered in child processes, since rendering imports the module (one that hangs,
   crashes or acts on import is skipped), and cached under `--out/pages`, until the pool holds
   `--pool-mb` (modules in name order; rendering every installed module would take hours).
2. For each size, takes pages in a fixed shuffled order until that many MB of HTML (so each
   corpus extends the smaller ones). Past the pool, the pages come round again as *variants*:
   variant k of a page (k = 1, 2, ...) has every word of four letters or more in its text
   (outside tags and entities) replaced by another word of the pool of the same length, by a
   permutation of the pool's words drawn from seed k, case kept. The markup,
   the lengths of words, the numbers, punctuation and short words stay, so a variant costs what
   its page costs to clean and meets the same rules; its 5-word shingles are new, so it is not a
   near-duplicate and stays in the dedup index (memory is measured with many kept documents).
   Each corpus is written twice: as RAW_DOC shards (a crawl artifact, for lmforge) and as JSONL
   files of {"id", "text": html} (for datatrove's JsonlReader): the same documents, same order.
3. Runs each side on each corpus in a fresh process tree, with the same number of workers, and
   samples the resident memory (RSS) of the whole tree (the process and all its descendants,
   summed) every 0.1 s:
   - lmforge: `run_clean` with the default CleanConfig, its per-job phases on a process pool of
     `--workers` spawned processes (what `runner.kind: processes` gives the flow; threads would
     share one core for this pure-Python work);
   - datatrove (installed by this bench in `--out/../venv-datatrove`, pinned in DATATROVE_PINS,
     never a project dependency): JsonlReader -> Trafilatura() -> GopherRepetitionFilter() ->
     GopherQualityFilter() -> JsonlWriter, on `LocalPipelineExecutor(tasks=N, workers=N)`, all
     with their defaults (its extractor runs each page in a sandbox process, with a 1 s timeout).
   lmforge does more per document (code kept verbatim, structure, PII, MinHash dedup, every
   reject recorded); datatrove's pipeline is the closest it ships for extraction and filtering.

It prints, per size and side, documents/s, MB/s and the peak RSS of the tree, and the ratio of
lmforge's documents/s to datatrove's; and per side the ratio of peak RSS at the largest size to
the smallest (near 1 when memory stays flat as the corpus grows), with the peaks of the main
process and of the largest worker, to tell where memory goes. A machine's speed drifts by 10% or
more over minutes: with `--repeat N` each size is measured in N rounds, the sides taking turns to
go first, each side is reported by its run of median speed, and the ratio of each round (two runs
next to each other in time) is printed with their median and the lowest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import random
import re
import shutil
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
SAMPLE_S = 0.1  # how often the process tree's memory is read
# datatrove and what its pipeline here needs, in a virtual environment of the bench's own:
# its `processing` extra (trafilatura < 1.12, which it pins, and the filters' dependencies),
# spaCy (its English word tokenizer, a blank model: nothing to download), lxml_html_clean
# (trafilatura 1.11's justext fallback imports it) and orjson (its JSONL reader and writer).
DATATROVE_PINS = [
    "datatrove[processing]==0.10.1",
    "trafilatura==1.11.0",
    "spacy==3.8.18",
    "lxml_html_clean==0.4.7",
    "orjson==3.13.0",
]

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

_WORD = re.compile(r"&#?\w+;|[A-Za-z]{4,}")  # entities are matched so as to be left alone
_TEXT = re.compile(r">([^<]+)<")  # text between tags


def word_pool(pages: list[Path], cache: Path) -> dict[int, list[str]]:
    """The pool's distinct words of four letters or more, lowercased, by length (sorted)."""
    path = cache / f"words-{len(pages)}.json"
    if not path.exists():
        words: set[str] = set()
        for page in pages:
            for text in _TEXT.findall(page.read_text("utf-8", errors="replace")):
                words.update(w.lower() for w in _WORD.findall(text) if not w.startswith("&"))
        by_length: dict[int, list[str]] = {}
        for w in sorted(words):
            by_length.setdefault(len(w), []).append(w)
        path.write_text(json.dumps(by_length))
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


class Variants:
    """Variant k of a page: its words swapped by permutation k of the pool (see the docstring)."""

    def __init__(self, pool: dict[int, list[str]]):
        self.pool = pool
        self.maps: dict[int, dict[str, str]] = {}

    def mapping(self, k: int) -> dict[str, str]:
        if k not in self.maps:
            rng = random.Random(k)
            swap: dict[str, str] = {}
            for words in self.pool.values():
                shuffled = words[:]
                rng.shuffle(shuffled)
                swap.update(zip(words, shuffled, strict=True))
            self.maps = {k: swap}  # one at a time: corpora take the variants in order
        return self.maps[k]

    def page(self, html: str, k: int) -> str:
        if k == 0:
            return html
        swap = self.mapping(k)

        def word(m: re.Match) -> str:
            w = m.group(0)
            new = swap.get(w.lower())
            if new is None:  # an entity, or a word the pool does not hold
                return w
            if w.islower():
                return new
            if w.isupper():
                return new.upper()
            return "".join(c.upper() if o.isupper() else c for c, o in zip(new, w, strict=True))

        return _TEXT.sub(lambda m: ">" + _WORD.sub(word, m.group(1)) + "<", html)


def corpus_order(pages: list[Path]) -> list[Path]:
    from lm_core.config import CrawlConfig

    # what a crawl would have fetched: it refuses responses above max_bytes
    order = [p for p in pages if p.stat().st_size <= CrawlConfig().max_bytes]
    random.Random(1337).shuffle(order)
    # Peak memory follows the largest single page (its parse tree), not the corpus size: start
    # every corpus with the same largest pages, so that what differs between sizes is only how
    # much there is, and the figures show whether memory grows with it.
    largest = sorted(order, key=lambda p: p.stat().st_size, reverse=True)[:3]
    return largest + [p for p in order if p not in largest]


def build_corpus(root: Path, pages: list[Path], variants: Variants, size_bytes: int, jsonl_files: int):
    """The first `size_bytes` of the corpus, as a crawl artifact under `root/ws` (for lmforge)
    and as `jsonl_files` gzipped JSONL files under `root/jsonl` (for datatrove)."""
    import pyarrow as pa

    from lm_core.schemas import RAW_DOC
    from lm_core.shards import shard_name, write_shard
    from lm_core.workspace import Workspace, fingerprint

    order = corpus_order(pages)
    ws = Workspace(root / "ws")
    fp = fingerprint("crawl", {"bench_bytes": size_bytes, "pages": len(order), "variants": 1}, {}, 1)
    jsonl_dir = root / "jsonl"
    with ws.build("crawl", fp, config={"bench_bytes": size_bytes}, inputs={}) as build:
        if build.published and (root / "jsonl.done").exists():
            return build.ref
        shutil.rmtree(jsonl_dir, ignore_errors=True)
        jsonl_dir.mkdir(parents=True)
        outs = [gzip.open(jsonl_dir / f"part-{i:03d}.jsonl.gz", "wt", encoding="utf-8") for i in range(jsonl_files)]
        rows, total, shard, n = [], 0, 0, 0
        when = datetime(2024, 1, 1, tzinfo=UTC)
        while total < size_bytes:
            page = order[n % len(order)]
            copy = n // len(order)
            html = variants.page(page.read_text("utf-8", errors="surrogateescape"), copy)
            body = html.encode("utf-8", errors="surrogateescape")
            url = f"http://127.0.0.1:8000/{page.name}?copy={copy}"
            rows.append(
                {
                    "url": url,
                    "source": "pydoc",
                    "fetched_at": when,
                    "status": 200,
                    "content_type": "text/html",
                    "declared_encoding": "utf-8",
                    "detected_encoding": None,
                    "body": body,
                }
            )
            text = body.decode("utf-8", errors="replace")  # what a JSONL corpus of the pages would hold
            outs[n % jsonl_files].write(json.dumps({"id": url, "text": text}) + "\n")
            total += len(body)
            n += 1
            if len(rows) == DOCS_PER_SHARD:
                write_shard(build.dir / "docs" / shard_name(shard), pa.Table.from_pylist(rows, RAW_DOC))
                rows, shard = [], shard + 1
        if rows:
            write_shard(build.dir / "docs" / shard_name(shard), pa.Table.from_pylist(rows, RAW_DOC))
        for f in outs:
            f.close()
        (root / "jsonl.done").write_text(str(n))
        build.stats = {
            "rows": n,
            "bytes_in": total,
            "unique_pages": min(n, len(order)),
            "variants": (n - 1) // len(order),
            "largest_page_bytes": max(p.stat().st_size for p in order[: min(n, len(order))]),
        }
    return build.ref


# ----------------------------------------------------------------------------- datatrove


def datatrove_python(out: Path) -> Path:
    """The bench's own virtual environment with datatrove (DATATROVE_PINS), made on first use."""
    venv = out.parent / "venv-datatrove"
    python = venv / "bin" / "python"
    marker = venv / "pins.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(DATATROVE_PINS)):
        print(f"installing datatrove into {venv} (once) ...", flush=True)
        log = venv.parent / "venv-datatrove.log"
        with open(log, "w") as f:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, stdout=f, stderr=f)
            subprocess.run([str(python), "-m", "pip", "install", *DATATROVE_PINS], check=True, stdout=f, stderr=f)
        marker.write_text("\n".join(DATATROVE_PINS))
    return python


DATATROVE_CHILD = r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

if __name__ == "__main__":
    input_dir, output_dir, logs, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pipeline = [
        JsonlReader(input_dir, glob_pattern="*.jsonl.gz"),
        Trafilatura(),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        JsonlWriter(output_dir),
    ]
    started = time.perf_counter()
    LocalPipelineExecutor(pipeline=pipeline, tasks=workers, workers=workers, logging_dir=logs).run()
    seconds = time.perf_counter() - started
    stats = json.load(open(logs + "/stats.json"))
    print(json.dumps({"seconds": seconds, "stats": stats}))
"""


def datatrove_counts(stats: list[dict]) -> dict:
    """Documents read, kept, timed out (extractor) from datatrove's merged stats.json."""

    def n(numbers: dict, key: str) -> int:
        v = numbers.get(key, 0)
        return int(v["total"] if isinstance(v, dict) else v)

    found = {}
    for step in stats:
        name, numbers = step.get("name", ""), step.get("stats", {})
        if "Reader" in name or "READER" in name.upper():
            found["documents_in"] = n(numbers, "documents")
        elif "Trafilatura" in name:
            found["extract_timeouts"] = n(numbers, "timeout")
            found["extracted"] = n(numbers, "forwarded")
        elif "Writer" in name or "WRITER" in name.upper():
            found["kept"] = n(numbers, "total")
    return found


# ----------------------------------------------------------------------------- one measured run


def child_run(ws_root: str, crawl_fp: str, workers: int) -> None:
    """In a fresh process: clean one crawl artifact on a pool of `workers` spawned processes
    (as `runner.kind: processes` does), and print timings and stats as JSON."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from lm_core.clean.stage import run_clean
    from lm_core.config import CleanConfig
    from lm_core.progress import NullProgress, serial_map
    from lm_core.workspace import Workspace

    ws = Workspace(ws_root)
    crawl = ws.ref("crawl", crawl_fp)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def process_map(fn, items, progress=NullProgress()):
        futures = [pool.submit(fn, item) for item in items]  # submitted in order: biggest first
        for f in as_completed(futures):
            f.result()
            progress.advance()
        return [f.result() for f in futures]

    started = time.perf_counter()
    ref = run_clean(CleanConfig(), crawl, ws, map_shards=serial_map if workers == 1 else process_map)
    seconds = time.perf_counter() - started
    pool.shutdown()
    print(json.dumps({"seconds": seconds, "stats": ref.stats}))


def run_sampled(command: list[str], cwd: Path | None = None) -> tuple[str, dict]:
    """Run `command`; return its stdout, the peak RSS of its process tree (all descendants
    summed, sampled every SAMPLE_S), of the command's own process and of its largest other
    process (a worker), in MB, and the CPU seconds the tree used (user + system, of every process
    waited for: the machine may be shared, and CPU time depends less on what else runs than wall
    time does)."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_quiet_env(), cwd=cwd
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    root = psutil.Process(proc.pid)
    peak_tree = peak_root = peak_child = 0
    cpu_seen: dict[int, float] = {}  # the last CPU time read of each process of the tree
    most_processes = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        rss = []
        for p in tree:
            try:
                rss.append(p.memory_info().rss)
                if p is root:
                    peak_root = max(peak_root, rss[-1])
                else:
                    peak_child = max(peak_child, rss[-1])
                times = p.cpu_times()
                cpu_seen[p.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        peak_tree = max(peak_tree, sum(rss))
        most_processes = max(most_processes, len(rss))
        time.sleep(SAMPLE_S)
    proc.wait()
    for t in readers:
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{''.join(err)[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # processes waited for count in RUSAGE_CHILDREN; the others (datatrove's) as last sampled
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(waited, sum(cpu_seen.values()))
    memory = {
        "peak_tree_mb": peak_tree / MB,
        "peak_main_mb": peak_root / MB,  # the stage's own process (datatrove's: its executor's)
        "peak_worker_mb": peak_child / MB,  # its largest other process
        "processes": most_processes,
    }
    return "".join(out), {**memory, "cpu_seconds": cpu}


def measure_lmforge(root: Path, crawl_fp: str, workers: int) -> dict:
    shutil.rmtree(root / "ws" / "clean", ignore_errors=True)  # a fresh clean each time
    stdout, memory = run_sampled([sys.executable, __file__, "--child", str(root / "ws"), crawl_fp, str(workers)])
    result = json.loads(stdout.strip().splitlines()[-1])
    stats = result["stats"]
    return {
        "seconds": result["seconds"],
        "docs": stats["documents_in"],
        "kept": stats["kept"],
        "bytes_in": stats["bytes_in"],
        **memory,
        "phase_seconds": stats["seconds"],
        "jobs": stats["jobs"],
        "rejected_by_reason": stats["rejected_by_reason"],
    }


def measure_datatrove(root: Path, python: Path, workers: int, bytes_in: int) -> dict:
    output, logs = root / "datatrove-out", root / "datatrove-logs"
    for old in (output, logs):
        shutil.rmtree(old, ignore_errors=True)
    script = root / "datatrove_child.py"
    script.write_text(DATATROVE_CHILD)
    command = [str(python), str(script), str(root / "jsonl"), str(output), str(logs), str(workers)]
    stdout, memory = run_sampled(command, cwd=root)
    result = json.loads(stdout.strip().splitlines()[-1])
    counts = datatrove_counts(result["stats"])
    return {"seconds": result["seconds"], "docs": counts.get("documents_in"), "kept": counts.get("kept"),
            "bytes_in": bytes_in, **memory, "extract_timeouts": counts.get("extract_timeouts")}  # fmt: skip


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,100,200", help="corpus sizes in MB of HTML, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, the same for both sides")
    parser.add_argument("--pool-mb", type=int, default=30, help="distinct pydoc pages to render (MB of HTML)")
    parser.add_argument("--sides", default="lmforge,datatrove", help="which to run: lmforge, datatrove or both")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per size: the sides alternate, each round's ratio is printed"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "clean")
    parser.add_argument("--child", nargs=3, metavar=("WORKSPACE", "CRAWL_FP", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(args.child[0], args.child[1], int(args.child[2]))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    sides = args.sides.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    pages = render_pages(args.out, list_modules(args.out), min(max(sizes), args.pool_mb) * MB)
    unique_mb = sum(p.stat().st_size for p in pages) / MB
    print(f"page pool: {len(pages)} distinct pydoc pages, {unique_mb:.0f} MB of HTML (variants beyond it)")
    variants = Variants(word_pool(pages, args.out))
    python = datatrove_python(args.out) if "datatrove" in sides else None

    results_path = args.out / f"results-w{args.workers}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for size in sizes:
        root = args.out / f"corpus-{size}"
        crawl = build_corpus(root, pages, variants, size * MB, jsonl_files=max(8, 4 * args.workers))
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for round_ in range(args.repeat):
            # alternate which side goes first, so that a drift of the machine's speed favours neither
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                if side == "lmforge":
                    r = measure_lmforge(root, crawl.fingerprint, args.workers)
                else:
                    r = measure_datatrove(root, python, args.workers, crawl.stats["bytes_in"])
                r.update(size_mb=round(crawl.stats["bytes_in"] / MB, 1), variants=crawl.stats["variants"])
                r.update(
                    docs_per_s=round(r["docs"] / r["seconds"], 2),
                    docs_per_cpu_s=round(r["docs"] / r["cpu_seconds"], 2),
                )
                r.update(mb_per_s=round(r["bytes_in"] / MB / r["seconds"], 3))
                runs[side].append(r)
                print(json.dumps({"size": size, "side": side, "round": round_ + 1, **r}), flush=True)
        for side, side_runs in runs.items():
            # the run of median speed stands for the side; every run's speed and peak are kept beside it
            median_run = sorted(side_runs, key=lambda r: r["docs_per_s"])[len(side_runs) // 2]
            results[f"{size}/{side}"] = {
                **median_run,
                "rounds": [{k: r[k] for k in ("docs_per_s", "docs_per_cpu_s", "peak_tree_mb")} for r in side_runs],
            }
        results_path.write_text(json.dumps(results, indent=1))
        if len(runs.get("lmforge", [])) > 1 and len(runs.get("datatrove", [])) > 1:
            pairs = zip(runs["lmforge"], runs["datatrove"], strict=True)
            ratios = [lm["docs_per_s"] / dt["docs_per_s"] for lm, dt in pairs]
            print(
                f"{size} MB, lmforge docs/s / datatrove docs/s, round by round: "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + f"; median {sorted(ratios)[len(ratios) // 2]:.2f}, lowest {min(ratios):.2f}"
            )

    print(
        f"\n{args.workers} worker processes on each side, {os.cpu_count()} CPUs; lmforge: run_clean on a pool of"
        " spawned processes (runner.kind: processes); datatrove: LocalPipelineExecutor(tasks=N, workers=N)"
    )
    print("docs/s: documents per second of wall time; per CPU-s: per second of CPU time of the whole tree")
    print(
        f"{'MB in':>7} {'docs':>6} | {'lmforge docs/s':>14} {'per CPU-s':>9} {'kept':>6} {'peak RSS MB':>11} | "
        f"{'datatrove docs/s':>16} {'per CPU-s':>9} {'kept':>6} {'timeouts':>8} {'peak RSS MB':>11} | "
        f"{'ratio':>5} {'per CPU-s':>9}"
    )
    measured = sorted({int(key.split("/")[0]) for key in results})  # this run's sizes and earlier runs'
    for size in measured:
        lm, dt = results.get(f"{size}/lmforge"), results.get(f"{size}/datatrove")
        any_side = lm or dt
        cells = [f"{any_side['size_mb']:>7} {any_side['docs']:>6} |"]
        if lm:
            cells.append(
                f"{lm['docs_per_s']:>14} {lm['docs_per_cpu_s']:>9} {lm['kept']:>6} {lm['peak_tree_mb']:>11.0f} |"
            )
        else:
            cells.append(f"{'':>44} |")
        if dt:
            cells.append(
                f"{dt['docs_per_s']:>16} {dt['docs_per_cpu_s']:>9} {dt['kept']:>6} {dt['extract_timeouts']:>8}"
                f" {dt['peak_tree_mb']:>11.0f} |"
            )
        else:
            cells.append(f"{'':>55} |")
        if lm and dt:
            cells.append(
                f"{lm['docs_per_s'] / dt['docs_per_s']:>5.2f} {lm['docs_per_cpu_s'] / dt['docs_per_cpu_s']:>9.2f}"
            )
        print(" ".join(cells))
    for side in ("lmforge", "datatrove"):
        rows = [results[f"{s}/{side}"] for s in measured if f"{s}/{side}" in results]
        if len(rows) > 1:
            ratio = rows[-1]["peak_tree_mb"] / rows[0]["peak_tree_mb"]
            print(
                f"{side}: peak RSS of the process tree at {rows[-1]['size_mb']} MB"
                f" / at {rows[0]['size_mb']} MB: {ratio:.2f}"
            )
        for row in rows:
            if "peak_main_mb" in row:  # where the memory is: the stage's process, or a worker
                print(
                    f"{side} at {row['size_mb']} MB: peak RSS of its main process {row['peak_main_mb']:.0f} MB,"
                    f" of its largest worker {row['peak_worker_mb']:.0f} MB"
                )


if __name__ == "__main__":
    main()
