"""How an lmforge command's process runs: the garbage collector set for a short, import-heavy
process (rarer collections; the imports' objects out of its sight), and an exit without
interpreter teardown. Standard library only: the overhead bench's direct path gets the same
treatment without importing the CLI.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False

# The collector's thresholds for a command: the youngest generation is collected once 50,000 new
# objects are pending instead of 700 (Python's default). The tiny lifecycle allocates about a
# million objects, most of them while importing and in bursts of its data stages: at the default
# that made 1,700 young, 160 middle and 10 full collections (1.2 s of a 9 s run), at these 20, 2
# and none. Garbage in reference cycles is still freed, later: the young generation's at its next
# collection, older garbage once 500,000 (middle) or 5 million (all) objects have piled up.
COMMAND_GC_THRESHOLDS = (50_000, 10, 10)


def collect_less_often() -> None:
    """Give this process a command's collector thresholds (COMMAND_GC_THRESHOLDS)."""
    gc.set_threshold(*COMMAND_GC_THRESHOLDS)


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """Run a command's imports with the garbage collector off, then freeze what they built.

    Importing Prefect, torch, MLflow and trafilatura creates half a million objects (modules,
    classes, functions, pydantic schemas) that live until the process exits. The collector, set
    off by allocation counts, walked them all again and again: seven full collections during the
    imports of the tiny lifecycle (0.6 s), each finding next to nothing, and every full collection
    after them walked them too (another 0.5 s). `gc.freeze()` moves them out of its sight; what the
    work itself creates is collected as before. Once per process: a later call (a test process
    running many commands) only runs its body, so that garbage is never frozen for good.
    """
    global _frozen
    if _frozen or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        _frozen = True
        gc.freeze()
        gc.enable()


def exit_now(code: int | str | None) -> None:
    """Exit without tearing the interpreter down: after a run, finalising torch's, MLflow's and
    Prefect's modules takes over a second and does nothing for the user. Every artifact is
    published and closed by now; the exit handlers (Prefect sends its last logs) still run."""
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"), as Python itself would show it
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
