"""Wall time of an unchanged rerun of the whole tiny lifecycle (`lmforge run`), as a user runs
it: a fresh process each time, Prefect's embedded API started by the CLI, everything cached.

    .venv/bin/python bench/cached_lifecycle.py [--runs 5] [--workspace DIR]

The first run builds every artifact (not timed); then `--runs` reruns are timed. Target: a
cached rerun in at most 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LMFORGE = Path(sys.executable).parent / "lmforge"


def run(workspace: Path) -> float:
    env = {**os.environ, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(
        [str(LMFORGE), "run", "--config", "configs/tiny.yaml", "--set", f"workspace={workspace}"],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workspace", type=Path, default=None)
    args = ap.parse_args()
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="lmforge-bench-")) / "workspace"
    print(f"first run (builds everything) in {workspace} ...", flush=True)
    print(f"first run: {run(workspace):.1f} s")
    times = [run(workspace) for _ in range(args.runs)]
    print("cached reruns: " + ", ".join(f"{t:.1f}" for t in times) + " s")
    med = statistics.median(times)
    print(f"median {med:.1f} s, best {min(times):.1f} s; target <= 10 s: {'met' if med <= 10 else 'NOT met'}")
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
