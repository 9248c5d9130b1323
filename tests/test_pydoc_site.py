"""The demo's website: `python -m pydoc` as a local server, and a crawl of it."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import FailAfter, Interrupted

from lm_core.config import CrawlConfig
from lm_core.crawl import reasons
from lm_core.crawl.pydoc_site import DEFAULT_EXCLUDES, PUBLIC_BASE, PydocServerError, pydoc_server
from lm_core.crawl.stage import run_crawl
from lm_core.schemas import FAILURE, RAW_DOC
from lm_core.shards import read_shard, shard_paths
from lm_core.workspace import Workspace


def read_all(folder: Path, schema) -> list[dict]:
    return [row for p in shard_paths(folder) for row in read_shard(p, schema).to_pylist()]


def our_children() -> list[str]:
    """Command lines of this process's live child processes (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and state != "Z":
            found.append(cmdline)
    return found


def port_is_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        return s.connect_ex((parts.hostname, parts.port)) != 0


def test_server_serves_its_index_and_stops(tmp_path):
    with pydoc_server() as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)
        r = httpx.get(base, timeout=30)
        assert r.status_code == 200 and "Index of Modules" in r.text
        assert r.headers["content-type"].startswith("text/html")
        assert 'href="os.html"' in r.text and 'href="numpy.html"' not in r.text  # standard library only
        assert any("pydoc" in c for c in our_children())
    assert port_is_closed(base)
    assert not any("pydoc" in c for c in our_children())


def test_the_callers_environment_is_not_on_the_pages(monkeypatch):
    """pydoc shows `os.environ` on several pages: a credential in the environment of the
    command that crawls would be stored in the documents, and learned by the model."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-do-not-crawl")
    with pydoc_server() as base:
        pages = [httpx.get(base + page, timeout=60).text for page in ("os.html", "cgi.html")]
    assert "environ" in pages[0] and not any("do-not-crawl" in page for page in pages)


def test_two_servers_serve_the_same_pages():
    """Object addresses and the working folder would make each server's pages differ: the demo
    crawl, and each refresh of it, would then hold new content every time."""
    # addresses in default values, a handle; a folder derived from sys.executable (project_base)
    pages = ["", "configparser.html", "ctypes.html", "difflib.html", "distutils.sysconfig.html"]
    served = []
    for _ in range(2):
        with pydoc_server() as base:
            served.append([httpx.get(base + page, timeout=60).text for page in pages])
    assert served[0] == served[1]
    assert "RawConfigParser" in served[0][1] and not re.search(r"(at|handle)(&nbsp;| )(0x)?[0-9a-f]{8}", served[0][1])
    assert "lmforge-pydoc" not in served[0][0]  # the working folder is not on the index


def test_where_the_python_lies_is_not_on_the_pages(tmp_path):
    """`sys.executable` is the clone's virtual environment: two clones in other folders would
    crawl different pages (and train on a path, perhaps a home folder with a user's name)."""
    elsewhere = tmp_path / "alice-clone" / "python3"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(sys.executable)
    served = []
    for python in (sys.executable, str(elsewhere)):
        with pydoc_server(python=python) as base:
            pages = ("sys.html", "platform.html", "distutils.sysconfig.html")
            served.append([httpx.get(base + page, timeout=60).text for page in pages])
    assert served[0] == served[1]
    assert "executable" in served[0][0] and "alice-clone" not in served[1][0] and sys.executable not in served[0][0]


def test_server_stops_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with pydoc_server() as base:
            raise RuntimeError("boom")
    assert port_is_closed(base)
    assert not any("pydoc" in c for c in our_children())


def test_a_server_that_never_gets_ready_is_a_clear_error(tmp_path):
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\ncat > /dev/null\n")  # reads its stdin until closed, prints nothing
    silent.chmod(0o755)
    with pytest.raises(PydocServerError, match="did not report 'Server ready'"):
        with pydoc_server(start_timeout_s=0.5, python=str(silent)):
            pass
    assert not any("silent-python" in c for c in our_children())
    failing = tmp_path / "failing-python"
    failing.write_text("#!/bin/sh\necho 'no such module' ; exit 3\n")
    failing.chmod(0o755)
    with pytest.raises(PydocServerError, match="exited with code 3.*no such module"):
        with pydoc_server(python=str(failing)):
            pass


def test_default_excludes_refuse_modules_that_act_on_import():
    base = "http://127.0.0.1:4242/"
    refused = ["antigravity.html", "this.html", "tkinter.html", "tkinter.ttk.html", "turtle.html", "turtledemo.html",
               "turtledemo.minimal_hanoi.html", "idlelib.html", "idlelib.idle.html", "test.html", "test.autotest.html",
               "get?key=antigravity", "topic?key=this", "venv.__main__.html", "ctypes.test.html",
               "getfile?key=/usr/lib/python3/os.py", "search?key=os", "index.html"]  # fmt: skip
    kept = ["", "os.html", "thisismine.html", "testing.html", "unittest.html", "topic?key=with", "tokenize.html",
            "asyncio.tasks.html", "pydoc_data.html", "keywords.html"]  # fmt: skip
    patterns = [re.compile(p) for p in DEFAULT_EXCLUDES]
    assert [u for u in refused if not any(p.search(base + u) for p in patterns)] == []
    assert [u for u in kept if any(p.search(base + u) for p in patterns)] == []


def test_crawl_of_the_demo_site(tmp_path):
    cfg = CrawlConfig(max_pages=25, docs_per_shard=4)
    assert cfg.pydoc is True  # the default source
    ws = Workspace(tmp_path / "ws")
    ref = run_crawl(cfg, ws)
    docs = read_all(ref.dir / "docs", RAW_DOC)
    failures = read_all(ref.dir / "failures", FAILURE)

    assert len(docs) == 25 and ref.stats["documents_by_source"] == {"pydoc": 25}
    assert docs[0]["url"] == PUBLIC_BASE  # stored under a stable name, not the random port
    assert all(d["url"].startswith(PUBLIC_BASE) for d in docs)
    assert all(d["content_type"] == "text/html" and d["declared_encoding"] == "utf-8" for d in docs)
    assert ref.stats["frontier_left"] > 200  # the index links ~300 modules
    # excluded pages are refused before any request: recorded as such, never fetched
    excluded = {f["url"].removeprefix(PUBLIC_BASE) for f in failures if f["reason"] == reasons.EXCLUDED}
    assert {
        "antigravity.html",
        "this.html",
        "tkinter.html",
        "turtle.html",
        "turtledemo.html",
        "idlelib.html",
        "test.html",
    } <= excluded
    fetched = {d["url"].removeprefix(PUBLIC_BASE) for d in docs}
    assert not fetched & excluded
    assert {f["reason"] for f in failures} <= {reasons.EXCLUDED, reasons.OFF_SITE}
    assert not any("pydoc" in c for c in our_children())

    # interrupted, it resumes on a new server (another port) to the same pages
    ws2 = Workspace(tmp_path / "ws2")
    with pytest.raises(Interrupted):
        run_crawl(cfg, ws2, FailAfter(10))
    assert not any("pydoc" in c for c in our_children())
    resumed = run_crawl(cfg, ws2)
    resumed_docs = [d["url"] for d in read_all(resumed.dir / "docs", RAW_DOC)]
    assert sorted(resumed_docs) == sorted(d["url"] for d in docs)
    assert resumed.stats["resumes"] == 1
