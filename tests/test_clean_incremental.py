"""Incremental clean: a refresh in which one page changed cleans that page only, reusing the
other documents' outcomes from the earlier clean artifact, and publishes the same bytes as a
build from scratch. Damaged or vanished outcomes are cleaned again, never trusted or fatal.

The site is real: pydoc's pages of a few standard modules, served over HTTP from a folder and
crawled by the crawl stage, one snapshot per refresh."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import pydoc_pages

import lm_core.clean.fingerprint as clean_fingerprint_module
from lm_core.clean.stage import run_clean
from lm_core.config import CleanConfig, CrawlConfig
from lm_core.crawl.stage import run_crawl
from lm_core.progress import NullProgress, serial_map
from lm_core.shards import read_shard, shard_name, shard_paths, write_shard
from lm_core.workspace import MANIFEST, ArtifactRef, Workspace

MODULES = ("argparse", "bisect", "csv", "fnmatch", "glob", "heapq", "json", "shlex", "string", "textwrap")
CHANGED = "textwrap.html"  # the last page in URL order: its output shard is not the first two
SHARDED = CleanConfig(docs_per_shard=4)  # 14 documents: four output shards


@pytest.fixture(scope="module")
def pages() -> dict[str, bytes]:
    """pydoc's pages, a copy of one (a duplicate: its text lands in rejected/), a page too short
    to keep (rejected with its text) and an empty one (rejected, no text)."""
    out = {f"{name}.html": page.encode() for name, page in pydoc_pages(*MODULES).items()}
    out["json-copy.html"] = out["json.html"]
    out["short.html"] = b"<html><body><p>Too short to keep, by far.</p></body></html>"
    out["empty.html"] = b""
    return out


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def site(tmp_path, pages):
    """(folder, url): the pages and an index linking them, served while the test runs."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name, body in pages.items():
        (folder / name).write_bytes(body)
    links = "".join(f'<li><a href="{name}">{name}</a></li>' for name in pages)
    (folder / "index.html").write_text(f"<html><body><ul>{links}</ul></body></html>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def crawl(ws: Workspace, url: str, snapshot: str) -> ArtifactRef:
    return run_crawl(CrawlConfig(urls=[url], max_depth=1, allow_loopback=True), ws, snapshot=snapshot)


def change_one_word(page: Path) -> None:
    body = page.read_bytes()
    assert b"paragraph" in body
    page.write_bytes(body.replace(b"paragraph", b"passage", 1))


def published(ref: ArtifactRef) -> dict[str, bytes]:
    """Every file of an artifact but its manifest (which holds times), with its bytes."""
    return {
        str(p.relative_to(ref.dir)): p.read_bytes()
        for p in sorted(ref.dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def from_scratch(cfg: CleanConfig, crawled: ArtifactRef, root: Path) -> ArtifactRef:
    """The same crawl cleaned in a workspace of its own: nothing to reuse."""
    ws = Workspace(root)
    shutil.copytree(crawled.dir, ws.artifact_dir("crawl", crawled.fingerprint))
    ref = run_clean(cfg, ws.ref("crawl", crawled.fingerprint), ws)
    assert ref.stats["reused"] == 0
    return ref


def same_outcome(a: ArtifactRef, b: ArtifactRef) -> None:
    assert published(a) == published(b)
    work = {"seconds", "cleaned", "reused", "reused_from", "jobs"}
    assert {k: v for k, v in a.stats.items() if k not in work} == {k: v for k, v in b.stats.items() if k not in work}


def test_a_refresh_with_one_changed_page_cleans_that_page_only_and_matches_a_build_from_scratch(site, tmp_path):
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    first = run_clean(SHARDED, crawl(ws, url, "s1"), ws)
    n = first.stats["documents_in"]
    assert n == 14 and first.stats["cleaned"] == n and first.stats["reused"] == 0
    assert {p.parts[-2] for p in first.dir.rglob("*.arrow")} == {"docs", "rejected", "outcomes"}

    change_one_word(folder / CHANGED)
    refreshed = crawl(ws, url, "s2")
    second = run_clean(SHARDED, refreshed, ws)
    assert second.fingerprint != first.fingerprint
    assert second.stats["cleaned"] == 1 and second.stats["reused"] == n - 1
    assert second.stats["reused_from"] == [first.fingerprint]
    texts = pa.concat_tables(read_shard(p) for p in shard_paths(second.dir / "docs")).column("text").to_pylist()
    assert any("passage" in t for t in texts)  # the change is in the output

    same_outcome(second, from_scratch(SHARDED, refreshed, tmp_path / "scratch"))


def test_damaged_outcomes_and_texts_are_cleaned_again_not_trusted(site, tmp_path):
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    first = run_clean(SHARDED, crawl(ws, url, "s1"), ws)
    outcomes = shard_paths(first.dir / "outcomes")
    # shard 0: its outcomes file cut short
    outcomes[0].write_bytes(outcomes[0].read_bytes()[:1000])
    # shard 1: a kept text edited inside a well-formed shard (its outcomes file is intact)
    docs = read_shard(first.dir / "docs" / shard_name(1))
    texts = docs.column("text").to_pylist()
    texts[0] = texts[0].replace("e", "a", 1)
    write_shard(tmp_path / "edited.arrow", docs.set_column(3, "text", pa.array(texts)))
    os.replace(tmp_path / "edited.arrow", first.dir / "docs" / shard_name(1))  # not in place: it is mapped

    change_one_word(folder / CHANGED)
    refreshed = crawl(ws, url, "s2")
    second = run_clean(SHARDED, refreshed, ws)
    assert second.stats["cleaned"] == 1 + 4 + 1  # the changed page, shard 0, the edited text
    same_outcome(second, from_scratch(SHARDED, refreshed, tmp_path / "scratch"))


def test_an_earlier_artifact_removed_during_the_build_is_cleaned_again(site, tmp_path):
    """`Workspace.remove` (what `lmforge gc` calls) between the lookup and the work: the files
    found are gone when the jobs read them, and every document is cleaned again."""
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    first = run_clean(SHARDED, crawl(ws, url, "s1"), ws)
    change_one_word(folder / CHANGED)
    refreshed = crawl(ws, url, "s2")

    def remove_first(fn, items, progress=NullProgress()):
        if ws.is_published("clean", first.fingerprint):
            ws.remove("clean", first.fingerprint)
        return serial_map(fn, items, progress)

    second = run_clean(SHARDED, refreshed, ws, map_shards=remove_first)
    assert second.stats["reused_from"] == [first.fingerprint]  # found at lookup ...
    assert second.stats["reused"] == 0 and second.stats["cleaned"] == 14  # ... gone when read
    same_outcome(second, from_scratch(SHARDED, refreshed, tmp_path / "scratch"))


def test_outcomes_are_reused_under_the_same_config_and_code_version_only(site, tmp_path, monkeypatch):
    folder, url = site
    ws = Workspace(tmp_path / "ws")
    crawled = crawl(ws, url, "s1")
    run_clean(SHARDED, crawled, ws)
    # another decisive setting: nothing to reuse
    assert run_clean(CleanConfig(favor="recall"), crawled, ws).stats["reused"] == 0

    change_one_word(folder / CHANGED)
    refreshed = crawl(ws, url, "s2")
    # performance-only settings differ: reused all the same, and the output is the same
    split = CleanConfig(docs_per_shard=4, bytes_per_job=1)
    assert run_clean(split, refreshed, ws).stats["cleaned"] == 1
    # the next code version cleans everything again
    monkeypatch.setattr(clean_fingerprint_module, "CODE_VERSION", clean_fingerprint_module.CODE_VERSION + 1)
    assert run_clean(SHARDED, refreshed, ws).stats["reused"] == 0
