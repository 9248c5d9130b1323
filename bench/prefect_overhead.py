"""What Prefect costs: the tiny lifecycle through the orchestrator vs the same `lm_core` calls made
directly, each in a fresh process and a fresh workspace.

    .venv/bin/python bench/prefect_overhead.py [--runs 1] [--config configs/tiny.yaml] [--set k=v ...]

(`--set pretrain.max_steps=600`, say, lengthens the run: the overhead is a fixed cost per run,
so its share falls as the work grows.)

- orchestrated: `lmforge run --config configs/tiny.yaml` (CLI start, Prefect's embedded API,
  the lifecycle flow with its subflows, tasks, per-shard task runs, UI artifacts, progress bars);
- direct: a Python process that calls run_crawl, run_clean, run_tokenize, run_chunk,
  run_pretrain, run_evaluate, run_register, then run_finetune, run_evaluate, run_register for
  the chat model (as flows/lifecycle.py does), clean and tokenize mapping their shards on a
  thread pool of the same size as the flow's task runner. Its process is set up as a command's
  (`lmforge/process.py`: the garbage collector's settings, the quick exit), so that the figures
  compare what Prefect costs, not how the two processes are tuned.

The site is crawled once (not timed) and that crawl artifact is copied into every workspace: in
both paths the crawl stage finds it published (a network-bound stage would only add noise), and
everything after it is computed from identical input. Likewise Prefect's
database is migrated once (timed, printed on its own: it is paid once per workspace, on its first
run) and copied into every orchestrated workspace, as a user's second run finds it. Target:
per-run overhead at most 10% of the direct wall time.

The same command is also timed while `lmforge server` runs for the workspace (it then records
its runs there and starts no server of its own). A last figure separates what the orchestration
costs per run from what a fresh process pays once: one process imports everything, starts the
embedded API, runs the direct calls and the lifecycle flow once each to warm up, then
alternately on fresh workspaces (`--in-process`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LMFORGE = Path(sys.executable).parent / "lmforge"
ENV = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
       "TOKENIZERS_PARALLELISM": "true"}  # fmt: skip


def direct(config: str, workspace: str, overrides: list[str] = ()) -> None:
    """The lifecycle without Prefect: the lm_core calls the tasks make, in the flows' order. Its
    imports get the same treatment as a command's (no garbage collection while importing)."""
    from functools import partial

    from lmforge.process import imports_without_collection

    with imports_without_collection():
        from lm_core.chunk.stage import run_chunk
        from lm_core.clean.stage import run_clean
        from lm_core.config import load_config
        from lm_core.crawl.stage import run_crawl
        from lm_core.evaluate.stage import run_evaluate
        from lm_core.finetune.stage import resolve_base, run_finetune
        from lm_core.progress import thread_map
        from lm_core.registry.stage import run_register
        from lm_core.tokenize.stage import run_tokenize
        from lm_core.train.stage import run_pretrain
        from lm_core.workspace import Workspace

    cfg = load_config(config, [*overrides, f"workspace={workspace}"])
    ws = Workspace(cfg.workspace)
    shards = partial(thread_map, workers=cfg.runner.max_workers or os.cpu_count())
    raw = run_crawl(cfg.crawl, ws)
    cleaned = run_clean(cfg.clean, raw, ws, map_shards=shards)
    tokens = run_tokenize(cfg.tokenize, cleaned, ws, map_shards=shards)
    blocks = run_chunk(cfg.chunk, tokens, ws)
    model = run_pretrain(cfg, blocks, ws)
    run_register(cfg, run_evaluate(cfg.evaluate, model, blocks, ws), ws)
    if cfg.finetune.enabled:
        chat = run_finetune(cfg, resolve_base(cfg, model, ws), ws)
        chunk = ws.ref("chunk", chat.manifest()["inputs"]["chunk"])
        run_register(cfg, run_evaluate(cfg.evaluate, chat, chunk, ws), ws)


def in_process(config: str, root: Path, crawl: Path, prefect_home: Path, runs: int, overrides: list[str]) -> None:
    """Direct calls vs the lifecycle flow, alternately in this one warm process: prints the medians."""
    import importlib

    from lm_core.config import load_config
    from lmforge.embedded import EmbeddedServer
    from lmforge.process import imports_without_collection

    home = fresh_workspace(root, "in-process-home", crawl, prefect_home) / ".prefect"
    os.environ["PREFECT_HOME"] = str(home)
    server = EmbeddedServer(home)
    with imports_without_collection():
        from flows.data import with_runner
        from flows.lifecycle import lifecycle_flow

        for stage in ("clean", "train", "evaluate", "finetune", "registry", "tokenize"):
            importlib.import_module(f"lm_core.{stage}.stage")  # what the direct path imports up front
        server.wait()
    flow_s, direct_s = [], []
    try:
        with server.settings():
            for i in range(runs + 1):  # the first of each warms up (caches, connections), not counted
                ws = fresh_workspace(root, f"in-process-direct-{i}", crawl)
                t0 = time.perf_counter()
                direct(config, str(ws), overrides)
                direct_s.append(time.perf_counter() - t0)
                cfg = load_config(
                    config, [*overrides, f"workspace={fresh_workspace(root, f'in-process-flow-{i}', crawl)}"]
                )
                t0 = time.perf_counter()
                with_runner(lifecycle_flow, cfg)(config=cfg)
                flow_s.append(time.perf_counter() - t0)
    finally:
        server.stop()
    print(f"IN-PROCESS {statistics.median(flow_s[1:]):.3f} {statistics.median(direct_s[1:]):.3f}")


def start_lmforge_server(workspace: Path) -> subprocess.Popen:
    """`lmforge server` for `workspace` (free ports), once it has announced itself to commands."""
    from lmforge.embedded import ANNOUNCEMENT, free_port

    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
    proc = subprocess.Popen(
        [str(LMFORGE), "server", "--set", f"workspace={workspace}", *ports],
        cwd=ROOT, env={**os.environ, **ENV, "PREFECT_HOME": str(workspace / ".prefect")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (workspace / ".prefect" / ANNOUNCEMENT).is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("lmforge server did not start")
        time.sleep(0.5)
    return proc


def seed_crawl(config: str, root: Path) -> Path:
    """Crawl once; returns the crawl artifact's folder."""
    from lm_core.config import load_config
    from lm_core.crawl.stage import run_crawl
    from lm_core.workspace import Workspace

    cfg = load_config(config, [f"workspace={root / 'seed'}"])
    return run_crawl(cfg.crawl, Workspace(cfg.workspace)).dir


def seed_prefect_home(root: Path) -> tuple[Path, float]:
    """A Prefect home whose database this Prefect version has migrated, and how long that took."""
    from lmforge.embedded import EmbeddedServer

    home = root / "seed" / ".prefect"
    t0 = time.perf_counter()
    server = EmbeddedServer(home)
    try:
        server.wait()
    finally:
        server.stop()
    return home, time.perf_counter() - t0


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def fresh_workspace(root: Path, name: str, crawl: Path, prefect_home: Path | None = None) -> Path:
    ws = root / name
    shutil.copytree(crawl, ws / "crawl" / crawl.name)
    if prefect_home is not None:
        shutil.copytree(prefect_home, ws / ".prefect", ignore=shutil.ignore_patterns("*.log"))
    return ws


def built_seconds(workspace: Path) -> dict[str, float]:
    """Seconds each stage spent building its artifacts (summed over a stage's artifacts)."""
    from lm_core.workspace import Workspace

    out: dict[str, float] = {}
    for a in Workspace(workspace).artifacts():
        if a["stage"] != "crawl":  # copied in, not built
            out[a["stage"]] = out.get(a["stage"], 0.0) + a["manifest"].get("seconds", 0.0)
    return out


def report(what: str, orchestrated: float, direct_s: float) -> None:
    overhead = (orchestrated - direct_s) / direct_s
    print(f"{what}:")
    print(f"  orchestrated {orchestrated:.2f} s, direct {direct_s:.2f} s, overhead {orchestrated - direct_s:+.2f} s "
          f"= {overhead:+.1%} (ratio {orchestrated / direct_s:.3f}); target <= 10%: "
          f"{'met' if overhead <= 0.10 else 'NOT met'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1, help="timed runs of each path (alternating)")
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V", help="config overrides")
    ap.add_argument("--direct", metavar="WORKSPACE", help=argparse.SUPPRESS)  # the direct path's process
    ap.add_argument("--in-process", nargs=3, metavar=("ROOT", "CRAWL", "HOME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_process:
        from lmforge.process import collect_less_often

        collect_less_often()
        root, crawl, home = map(Path, args.in_process)
        in_process(args.config, root, crawl, home, args.runs, args.overrides)
        from lmforge.process import exit_now

        exit_now(0)
    if args.direct:
        from lmforge.process import collect_less_often

        collect_less_often()  # the collector as a command sets it: this bench measures what Prefect costs
        direct(args.config, args.direct, args.overrides)
        from lmforge.process import exit_now

        exit_now(0)  # the same quick exit as the CLI's, so that neither side pays interpreter teardown

    root = Path(tempfile.mkdtemp(prefix="lmforge-overhead-"))
    print(f"crawling once into {root / 'seed'} (not timed) ...", flush=True)
    crawl = seed_crawl(args.config, root)
    prefect_home, migrate_s = seed_prefect_home(root)
    print(f"Prefect's first start on a new workspace (database migration), once: {migrate_s:.1f} s", flush=True)
    flow_s, direct_s = [], []
    sets = [a for kv in args.overrides for a in ("--set", kv)]
    served_home = fresh_workspace(root, "served", crawl, prefect_home) / ".prefect"
    served = start_lmforge_server(root / "served")
    served_s = []
    try:
        for i in range(args.runs):
            ws = fresh_workspace(root, f"flow-{i}", crawl, prefect_home)
            flow_s.append(timed([str(LMFORGE), "run", "--config", args.config, *sets, "--set", f"workspace={ws}"]))
            ws = fresh_workspace(root, f"direct-{i}", crawl)
            direct_s.append(timed([sys.executable, __file__, "--config", args.config, *sets, "--direct", str(ws)]))
            # the same command while `lmforge server` runs: it records the run there, starting no server
            ws = fresh_workspace(root, f"served-{i}", crawl)
            cmd = [str(LMFORGE), "run", "--config", args.config, *sets, "--set", f"workspace={ws}"]
            served_s.append(timed(cmd, env={"PREFECT_HOME": str(served_home)}))
            print(f"run {i + 1}: orchestrated {flow_s[-1]:.1f} s, direct {direct_s[-1]:.1f} s, "
                  f"with lmforge server running {served_s[-1]:.1f} s", flush=True)  # fmt: skip
    finally:
        served.send_signal(signal.SIGINT)
        served.wait(timeout=60)
    # where the time goes: each stage's own build time (its manifest's `seconds`), last run
    stage_s = {path: built_seconds(root / f"{path}-{args.runs - 1}") for path in ("flow", "direct")}
    for stage in stage_s["direct"]:
        print(f"  {stage:<10} built in {stage_s['flow'].get(stage, 0):6.1f} s orchestrated, "
              f"{stage_s['direct'][stage]:6.1f} s direct")  # fmt: skip
    cmd = [sys.executable, __file__, "--config", args.config, *sets, "--runs", str(args.runs),
           "--in-process", str(root), str(crawl), str(prefect_home)]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("IN-PROCESS ")]
    if out.returncode or not line:
        sys.exit(f"the in-process measurement failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    in_flow, in_direct = map(float, line[0].split()[1:])
    f, d = statistics.median(flow_s), statistics.median(direct_s)
    report("each in a fresh process: `lmforge run` vs a script of the same calls", f, d)
    report("the same, while `lmforge server` runs for the workspace", statistics.median(served_s), d)
    report("in one warm process (Prefect imported, API up): the lifecycle flow vs the calls", in_flow, in_direct)
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
