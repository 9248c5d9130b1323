"""The demo's website: Python's own documentation, served by `python -m pydoc` on 127.0.0.1.

The server runs the standard library only (`-S`: no site-packages). That makes the site the same
on every machine with the same Python version, which is what the crawl's fingerprint records in
place of the server's random port, and it keeps third-party packages (torch, prefect, mlflow)
from being imported, slowly and with side effects, just to render a page. On CPython 3.11 its
index links about 300 top-level modules; with submodules, topics and keywords the crawl finds
about 870 pages (some 20 MB of HTML, in about 25 s on two cores).

pydoc imports a module to render its page, so the demo crawl refuses the pages of modules that
act on import, the way robots.txt would (see `DEFAULT_EXCLUDES`). As a second line of defence
the server runs in an empty working folder, which is also left off its path, and with an
environment of its own (`PATH` and a UTF-8 locale: no display, no `PYTHON*` variables, and no
variable of the caller's, whose values pydoc's pages would show).

Its server reads commands on standard input and stops at end of input, so the pipe to its stdin
is held open while the crawl runs; closing it (or this process dying) stops the server.
"""

from __future__ import annotations

import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# where stored documents say the pages came from: the live server's port changes every run
PUBLIC_BASE = "http://pydoc.invalid/"

# modules whose import does something: opens a browser (antigravity), prints (this), wants a
# display (tkinter, turtle, turtledemo, idlelib), or runs a program (test.autotest runs the whole
# regression suite; every package's __main__ runs that package's command line, and asyncio's
# reads the server's stdin)
UNSAFE_MODULES = ("antigravity", "this", "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "test")
_PAGE = r"^https?://[^/]+/(?:(?:get|topic)\?key=)?"  # /name.html, /get?key=name, /topic?key=name
DEFAULT_EXCLUDES = (
    _PAGE + r"(?:" + "|".join(re.escape(m) for m in UNSAFE_MODULES) + r")(?:\.|$)",
    _PAGE + r"(?:[\w.]+\.)?__main__(?:\.|$)",
    _PAGE + r"[\w.]+\.(?:test|tests|idle_test)(?:\.|$)",  # test suites inside packages (ctypes.test, ...)
    r"^https?://[^/]+/getfile\?",  # source listings: code, not prose, and a file read per page
    r"^https?://[^/]+/search\?",  # search results: pydoc imports every module to search them
    r"^https?://[^/]+/index\.html$",  # the same page as the root, which is the seed
)

_READY = re.compile(r"Server ready at (http://\S+/)")

# `python -m pydoc -n 127.0.0.1 -p 0`, with what changes each time a server starts taken out of
# its pages: object addresses (`<object object at 0x7f...>` in default values, `<PyDLL 'None',
# handle 7f...>`), the working folder (the index lists every path entry), and where the Python
# lies (`sys.executable`, shown by the sys, platform and ctypes._aix pages: a clone's virtual
# environment, a home folder). The pages then follow from the Python's version alone, so two
# crawls of the demo, a refresh, or two clones in other folders find the same pages (and share
# what is built from them). `sys.executable` is set before pydoc imports `platform`, whose
# `architecture()` takes it as a default value; to an absolute path, since a relative one would
# put the working folder on the distutils.sysconfig page (`project_base`).
_SERVER = """
import sys
sys.executable = sys.orig_argv[0] = "/usr/bin/python3"
import pydoc, re
sys.path[:] = [p for p in sys.path if p]
page = pydoc._url_handler
address = re.compile(r"(?: |&nbsp;)(?:at|handle)(?: |&nbsp;)(?:0x)?[0-9a-fA-F]{8,16}\\b")
pydoc._url_handler = lambda url, content_type="text/html": address.sub("", page(url, content_type))
pydoc.browse(0, open_browser=False, hostname="127.0.0.1")
"""


class PydocServerError(RuntimeError):
    """The pydoc server did not start."""


def site_identity() -> str:
    """What decides the site's content (the crawl fingerprints this, not the port)."""
    python = f"{sys.implementation.name} {platform.python_version()} {sys.platform}"
    return f"{python} stdlib (python -m pydoc -S, no addresses, no paths)"


def _drain(stream, lines: queue.Queue) -> None:
    """Read the server's output to the end, so that it never blocks on a full pipe."""
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


@contextmanager
def pydoc_server(start_timeout_s: float = 30.0, python: str = sys.executable) -> Iterator[str]:
    """Run the pydoc server for the duration of the block; yields its base URL
    (`http://127.0.0.1:PORT/`). The server is stopped when the block ends, also on errors."""
    # not the caller's environment: pages show `os.environ` (the `os` page, default arguments), so
    # every variable, credentials included, would be crawled into the documents and the model
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="lmforge-pydoc-") as empty_dir:
        proc = subprocess.Popen(
            [python, "-u", "-S", "-E", "-c", _SERVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=empty_dir, env=env, text=True, encoding="utf-8", errors="replace",
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop it in order
        )  # fmt: skip
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_drain, args=(proc.stdout, lines), name="pydoc-output", daemon=True)
        reader.start()
        try:
            yield _wait_ready(proc, lines, start_timeout_s)
        finally:
            _stop(proc)
            reader.join(timeout=5)
            if not reader.is_alive():  # else a grandchild holds the pipe; closing would wait on the reader
                proc.stdout.close()


def _wait_ready(proc: subprocess.Popen, lines: queue.Queue, timeout_s: float) -> str:
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout_s)  # each line must come within the timeout; pydoc prints two
        except queue.Empty:
            raise PydocServerError(
                f"`python -m pydoc` did not report 'Server ready' within {timeout_s:.0f} s; output: {''.join(seen)!r}"
            ) from None
        if line is None:
            proc.wait(timeout=5)
            raise PydocServerError(
                f"`python -m pydoc` exited with code {proc.returncode} before serving; output: {''.join(seen)!r}"
            )
        seen.append(line)
        m = _READY.search(line)
        if m:
            return m.group(1)


def _stop(proc: subprocess.Popen) -> None:
    """Ask politely (`q`, end of input), then terminate, then kill: it must not outlive the crawl."""
    try:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.write("q\n")
            proc.stdin.flush()
            proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass
    try:
        proc.wait(timeout=5)  # it notices within its 1 s select() timeout
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # its own session: also whatever a rendered module started
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
