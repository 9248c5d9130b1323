"""How an lmforge command's process runs: the garbage collector set for a short, import-heavy
process (rarer collections; the imports' objects out of its sight), and an exit without
interpreter teardown. Standard library only: the overhead bench's direct path gets the same
treatment without importing the CLI.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
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


# ----------------------------------------------------------------------------- what a command prints

# lmforge's own code: in quiet mode (the default) only its warnings reach the terminal.
OUR_PACKAGES = ("lm_core", "lmforge", "tasks", "flows", "deployments")
VERBOSE_ENV = "LMFORGE_VERBOSE"  # "1": -v was given (inherited by a training's torchrun processes)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def set_verbosity(verbose: bool) -> None:
    """Quiet (the default): the terminal shows lmforge's own lines, bars, warnings and `error:` lines;
    Prefect's run logs, MLflow's INFO lines and third-party warnings (setuptools, pkg_resources,
    torch) only with -v. The Prefect UI keeps every run log either way. Set before Prefect and
    MLflow are imported (their loggers read the environment then); `quiet_console` finishes it."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for the processes a command starts (torchrun)
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # MLflow imported already (a test process)
    quiet_console()


class QuietConsole:
    """A filter for the handlers that write logs to the terminal: without -v, only lmforge's own
    warnings and errors pass (Prefect's run logs, with their tracebacks, still go to the API)."""

    def filter(self, record) -> bool:
        if is_verbose():
            return True
        return record.levelno >= 30 and record.name.split(".")[0] in OUR_PACKAGES


def quiet_console() -> None:
    """Put a QuietConsole filter on every handler that writes to the terminal; run again once Prefect
    has set up its logging (its console handler is made then). Handlers writing to files keep all."""
    loggers = [
        logging.getLogger(),
        *(v for v in list(logging.Logger.manager.loggerDict.values()) if isinstance(v, logging.Logger)),
    ]
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for logger in loggers:
        for handler in logger.handlers:
            # Prefect's (bound to the stderr of its set-up), MLflow's (its own stream), any on stdout or
            # stderr; not a test's log capture, nor a file
            shows = type(handler).__name__ == "PrefectConsoleHandler" or getattr(handler, "stream", None) in terminal
            if shows and not any(isinstance(f, QuietConsole) for f in handler.filters):
                handler.addFilter(QuietConsole())


def stdout_gone() -> None:
    """After a BrokenPipeError on stdout (its reader, `| head` or `| tee`, has gone): send what is
    still printed to /dev/null, so that the command goes on (or cleans up) instead of failing on
    every later print, and Python's exit does not complain while flushing."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# ----------------------------------------------------------------------------- a child tied to its parent

# A server that `lmforge server` starts runs under a guard: `python -m lmforge.process guard PARENT -- ARGV`.
# The guard leads the server's process group, and stops that whole group (the server and the workers
# it spawned) once its parent is gone, however the parent ended: a `kill -9` of `lmforge server`
# leaves no server running. Linux tells the guard at once (PR_SET_PDEATHSIG); elsewhere it notices
# within GUARD_POLL_S.
GUARD_POLL_S = 0.5
GUARD_STOP_S = 10.0
PR_SET_PDEATHSIG = 1


def guarded(argv: list[str]) -> list[str]:
    """`argv` run under a guard tied to this process."""
    return [sys.executable, "-m", "lmforge.process", "guard", str(os.getpid()), "--", *argv]


def _die_with_parent(sig: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass  # the poll in guard() still notices


def guard(parent: int, argv: list[str]) -> int:
    """Run `argv` in this process group; stop the group when the parent dies or a SIGTERM comes."""
    _die_with_parent(signal.SIGTERM)
    stopping = False

    def stop_group(signum=None, frame=None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop_group)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        return 1
    child = subprocess.Popen(argv)
    while child.poll() is None and not stopping:
        if os.getppid() != parent:
            stopping = True
            break
        try:
            child.wait(timeout=GUARD_POLL_S)
        except subprocess.TimeoutExpired:
            pass
    if stopping:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)  # the server and its workers shut down gracefully ...
        deadline = time.monotonic() + GUARD_STOP_S
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(0, signal.SIGKILL)  # ... or not at all; this ends the guard too
    return child.returncode


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "guard" and sys.argv[3] == "--":
        sys.exit(guard(int(sys.argv[2]), sys.argv[4:]))
    sys.exit("usage: python -m lmforge.process guard PARENT_PID -- COMMAND ...")
