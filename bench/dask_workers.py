"""The data flow's wall time on a Dask LocalCluster of 1 vs 2 workers, on the same corpus.

    .venv/bin/python bench/dask_workers.py [--pages 200] [--docs-per-shard 25] [--workers 1 2]

The pydoc site is crawled once (not timed: a network-bound stage would only add noise) into
shards of `--docs-per-shard` documents, which is also the clean stage's task size
(`clean.docs_per_shard`); each run copies that crawl artifact into a fresh workspace and runs
the data flow (clean -> tokenize -> chunk; the crawl is found published) with
`runner.kind=dask`. The wall time includes starting the cluster; the clean stage's filter and
write phases and the tokenize stage's encoding are the per-shard work the workers share.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--docs-per-shard", type=int, default=25)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lmforge-dask-"))
    # Prefect's home in the bench's folder, set before Prefect is imported
    os.environ.update(PREFECT_HOME=str(root / ".prefect"), DO_NOT_TRACK="true", PREFECT_LOGGING_LEVEL="WARNING",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", TOKENIZERS_PARALLELISM="true")  # fmt: skip
    from lmforge.embedded import EmbeddedServer

    server = EmbeddedServer(root / ".prefect")  # a real API the Dask workers can reach
    from flows.data import data_flow, with_runner
    from lm_core.config import load_config
    from lm_core.crawl.stage import run_crawl
    from lm_core.workspace import Workspace

    shard = f"docs_per_shard={args.docs_per_shard}"
    sets = [f"crawl.max_pages={args.pages}", f"crawl.{shard}", f"clean.{shard}"]  # clean's tasks: its own setting
    seed = load_config(args.config, [f"workspace={root / 'seed'}", *sets])
    print(f"crawling {args.pages} pages once into {seed.workspace} (not timed) ...", flush=True)
    crawl = run_crawl(seed.crawl, Workspace(seed.workspace))
    print(f"corpus: {crawl.stats.get('rows')} documents in {len(list((crawl.dir / 'docs').glob('*.arrow')))} shards")

    server.wait()
    try:
        with server.settings():
            for n in args.workers:
                ws = root / f"workers-{n}"
                shutil.copytree(crawl.dir, ws / "crawl" / crawl.fingerprint)
                cfg = load_config(
                    args.config, [f"workspace={ws}", *sets, "runner.kind=dask", f"runner.max_workers={n}"]
                )
                t0 = time.perf_counter()
                refs = with_runner(data_flow, cfg)(config=cfg)
                wall = time.perf_counter() - t0
                clean_s = refs.clean.stats["seconds"]
                print(
                    f"{n} Dask worker(s): data flow {wall:.1f} s (clean filter {clean_s['filter']:.1f} s, "
                    f"write {clean_s['write']:.1f} s; tokenize encode {refs.tokenize.stats['encode_seconds']:.1f} s); "
                    f"chunk {refs.chunk.fingerprint}",
                    flush=True,
                )
    finally:
        server.stop()
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
