"""The web crawler against real HTTP servers on 127.0.0.1: what it keeps, what it refuses and why,
its manners (robots.txt, retries, timeouts, caps), its budget, caching, and resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pytest

from lm_core.clean.fingerprint import clean_fingerprint
from lm_core.clean.stage import run_clean
from lm_core.config import CleanConfig, CrawlConfig
from lm_core.crawl import reasons
from lm_core.crawl.encoding import Encodings, sniff
from lm_core.crawl.links import extract_links
from lm_core.crawl.stage import STATE_FILE, NoDocuments, crawl_fingerprint, redundant_snapshots, run_crawl
from lm_core.crawl.urls import (
    LINK_LOCAL,
    LOOPBACK,
    PRIVATE,
    BadURL,
    Scope,
    UnsupportedScheme,
    address_kind,
    is_public_address,
    normalize_url,
)
from lm_core.schemas import FAILURE, RAW_DOC
from lm_core.shards import read_shard, shard_paths
from lm_core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- a tiny web site


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay_s: float = 0.0  # before the status line: a slow server
    content_length: bool = True  # False: the body ends when the connection closes


Route = Callable[[int], Reply]  # called with how many times this path has been requested (1, 2, ...)


class Site:
    """An HTTP/1.0 server on 127.0.0.1 serving `routes` (path with query -> Route), counting hits."""

    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.hits: Counter[str] = Counter()
        self.times: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with site._lock:
                    site.hits[self.path] += 1
                    n = site.hits[self.path]
                    site.times.append((self.path, time.monotonic()))
                route = site.routes.get(self.path)
                reply = route(n) if route else Reply(404, b"not found", {"Content-Type": "text/plain"})
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that gave up (the timeout test) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def html(*links: str, body: str = "", head: str = "") -> bytes:
    anchors = "".join(f'<a href="{href}">link</a>\n' for href in links)
    return f"<html><head>{head}<title>t</title></head><body><p>{body}</p>\n{anchors}</body></html>".encode()


def page(*links: str, **kw) -> Route:
    body = html(*links, **kw)
    return lambda n: Reply(body=body)


def redirect(location: str, status: int = 301) -> Route:
    return lambda n: Reply(status, b"", {"Location": location})


def fixed(reply: Reply) -> Route:
    return lambda n: reply


def read_all(folder: Path, schema: pa.Schema) -> list[dict]:
    return [row for p in shard_paths(folder) for row in read_shard(p, schema).to_pylist()]


def crawl_config(seed: str, **overrides) -> CrawlConfig:
    settings = dict(urls=[seed], allow_loopback=True, retries=1, backoff_s=0.01, connect_timeout_s=2,
                    read_timeout_s=0.3, docs_per_shard=4)  # fmt: skip
    settings.update(overrides)
    return CrawlConfig(**settings)


class RecordingProgress:
    def __init__(self):
        self.phases: list[tuple[int | None, str]] = []
        self.advanced = 0

    def start(self, total, unit):
        self.phases.append((total, unit))

    def advance(self, n=1):
        self.advanced += n


# ----------------------------------------------------------------------------- the main site

CP1252_TEXT = "“Quoted” text costs 5 € – naïve café"
SJIS_TEXT = "日本語のテキストです。これはテストのページです。東京、大阪、京都、名古屋、札幌。" * 2
LATIN1_TEXT = "Café, crème brûlée, déjà vu."
BIG = b"<html><body>" + b"x" * 50_000 + b"</body></html>"

MAIN_ROUTES: dict[str, Route] = {
    "/robots.txt": fixed(
        Reply(
            body=b"User-agent: otherbot\nDisallow: /\n\nUser-agent: *\nDisallow: /private/\n",
            headers={"Content-Type": "text/plain"},
        )
    ),
    "/": page(
        "/a.html",
        "b.html",
        "/a.html#section",
        "./a.html",
        "/x/../a.html",  # one page, five spellings
        "/private/secret.html",
        "/excluded/page.html",
        "http://other.invalid/page.html",
        "/redirect-good",
        "/redirect-seen",
        "/redirect-loop-a",
        "/chain/0",
        "/redirect-away",
        "/missing.html",
        "/broken.html",
        "/flaky.html",
        "/slow.html",
        "/image.png",
        "/big.html",
        "/big-stream.html",
        "/cp1252.html",
        "/sjis.html",
        "/latin1-meta.html",
        "/nodecl.html",
        "/wrong-decl.html",
        "/text.txt",
        "/sub/base.html",
        "mailto:someone@example.com",
        "javascript:void(0)",
        "ftp://example.com/file",
        "http://[oops/x",
        body='<a href="/nofollow.html" rel="external nofollow">not followed</a>',
    ),
    "/a.html": page("/deep/1.html", "http://other.invalid/page.html", "/"),
    "/b.html": page("/a.html", "/"),
    "/deep/1.html": page("/deep/2.html"),  # at max_depth: its links are not followed
    "/deep/2.html": page(),
    "/nofollow.html": page(),
    "/private/secret.html": page(),
    "/excluded/page.html": page(),
    "/redirect-good": redirect("/target.html"),
    "/target.html": page(body="arrived"),
    "/redirect-seen": redirect("/b.html", 302),  # b.html is queued already: no second copy
    "/redirect-loop-a": redirect("/redirect-loop-b", 302),
    "/redirect-loop-b": redirect("/redirect-loop-a", 302),
    **{f"/chain/{i}": redirect(f"/chain/{i + 1}", 307) for i in range(10)},
    "/redirect-away": redirect("http://other.invalid/elsewhere"),
    "/broken.html": fixed(Reply(500, b"oops")),
    "/flaky.html": lambda n: Reply(503, b"busy") if n == 1 else Reply(body=html(body="recovered")),
    "/slow.html": fixed(Reply(body=html(body="too late"), delay_s=1.5)),
    "/image.png": fixed(Reply(body=b"\x89PNG\r\n\x1a\n" + bytes(100), headers={"Content-Type": "image/png"})),
    "/big.html": fixed(Reply(body=BIG)),
    "/big-stream.html": fixed(Reply(body=BIG, content_length=False)),
    "/cp1252.html": fixed(
        Reply(
            body=f"<html><body><p>{CP1252_TEXT}</p></body></html>".encode("cp1252"),
            headers={"Content-Type": "text/html; charset=windows-1252"},
        )
    ),
    "/sjis.html": fixed(
        Reply(
            body=f'<html><head><meta charset="Shift_JIS"></head><body><p>{SJIS_TEXT}</p></body></html>'.encode(
                "shift_jis"
            ),
            headers={"Content-Type": "text/html"},
        )
    ),
    "/latin1-meta.html": fixed(
        Reply(
            body=(
                '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>'
                f"<body><p>{LATIN1_TEXT}</p></body></html>"
            ).encode("latin-1"),
            headers={"Content-Type": "text/html"},
        )
    ),
    "/nodecl.html": fixed(
        Reply(
            body=f"<html><body><p>{SJIS_TEXT}</p></body></html>".encode("shift_jis"),
            headers={"Content-Type": "text/html"},
        )
    ),
    "/wrong-decl.html": fixed(
        Reply(
            body=f"<html><body><p>{CP1252_TEXT * 3}</p></body></html>".encode("cp1252"),
            headers={"Content-Type": "text/html; charset=utf-8"},
        )
    ),
    "/text.txt": fixed(Reply(body=b"plain text\n", headers={"Content-Type": "text/plain; charset=utf-8"})),
    "/sub/base.html": page("rel.html", head='<base href="/based/">'),
    "/based/rel.html": page(body="resolved against base href"),
}

KEPT = {
    "/",
    "/a.html",
    "/b.html",
    "/deep/1.html",
    "/target.html",
    "/flaky.html",
    "/cp1252.html",
    "/sjis.html",
    "/latin1-meta.html",
    "/nodecl.html",
    "/wrong-decl.html",
    "/text.txt",
    "/sub/base.html",
    "/based/rel.html",
}
REFUSED = {
    "/private/secret.html": reasons.ROBOTS,
    "/excluded/page.html": reasons.EXCLUDED,
    "http://other.invalid/page.html": reasons.OFF_SITE,
    "/redirect-loop-a": reasons.REDIRECT_LOOP,
    "/chain/0": reasons.TOO_MANY_REDIRECTS,
    "/redirect-away": reasons.OFF_SITE,
    "/missing.html": reasons.HTTP_ERROR,
    "/broken.html": reasons.HTTP_ERROR,
    "/slow.html": reasons.TIMEOUT,
    "/image.png": reasons.CONTENT_TYPE,
    "/big.html": reasons.TOO_LARGE,
    "/big-stream.html": reasons.TOO_LARGE,
    "http://[oops/x": reasons.BAD_URL,
}  # fmt: skip


@pytest.fixture(scope="module")
def main_crawl(tmp_path_factory):
    """One crawl of the main site, shared by the tests that inspect it."""
    with Site(MAIN_ROUTES) as site:
        cfg = crawl_config(
            site.url("/"),
            max_depth=2,
            max_pages=100,
            exclude=[r"/excluded/"],
            max_bytes=20_000,
            max_redirects=3,
            concurrency=4,
        )
        ws = Workspace(tmp_path_factory.mktemp("ws"))
        progress = RecordingProgress()
        ref = run_crawl(cfg, ws, progress)
        hits_after_first = Counter(site.hits)
        again = run_crawl(cfg, ws, progress)
        yield {
            "site": site, "ref": ref, "again": again, "progress": progress,
            "hits": hits_after_first, "hits_after_second": Counter(site.hits),
            "docs": read_all(ref.dir / "docs", RAW_DOC), "failures": read_all(ref.dir / "failures", FAILURE),
        }  # fmt: skip


def local(site: Site, url: str) -> str:
    return url.removeprefix(site.base) if url.startswith(site.base) else url


def test_keeps_exactly_the_pages_in_scope(main_crawl):
    site, docs = main_crawl["site"], main_crawl["docs"]
    urls = [local(site, d["url"]) for d in docs]
    assert sorted(urls) == sorted(KEPT)  # each once: five spellings of /a.html, a redirect to /b.html
    assert {d["source"] for d in docs} == {"urls"}
    assert all(d["status"] == 200 and d["fetched_at"] is not None for d in docs)


def test_refuses_with_the_right_reason_each_url_once(main_crawl):
    site, failures = main_crawl["site"], main_crawl["failures"]
    got = {local(site, f["url"]): f["reason"] for f in failures}
    assert len(got) == len(failures), "a URL was recorded twice"
    assert got == REFUSED
    by_url = {local(site, f["url"]): f for f in failures}
    assert by_url["/missing.html"]["status"] == 404
    assert by_url["/broken.html"]["status"] == 500
    assert "other.invalid/elsewhere" in by_url["/redirect-away"]["detail"]
    assert "robots.txt" in by_url["/private/secret.html"]["detail"]


def test_requests_what_it_must_and_nothing_else(main_crawl):
    hits = main_crawl["hits"]
    assert hits["/robots.txt"] == 1
    assert hits["/"] == 1 and hits["/a.html"] == 1 and hits["/b.html"] == 1
    assert hits["/flaky.html"] == 2  # 503, then retried into a 200
    assert hits["/broken.html"] == 2 and hits["/slow.html"] == 2  # retries=1
    assert hits["/missing.html"] == 1  # a 4xx is not retried
    assert hits["/redirect-loop-a"] == 1 and hits["/redirect-loop-b"] == 1
    assert [hits[f"/chain/{i}"] for i in range(6)] == [1, 1, 1, 1, 0, 0]  # max_redirects=3
    never = ["/private/secret.html", "/excluded/page.html", "/nofollow.html", "/deep/2.html", "/image.png"]
    assert {p: hits[p] for p in never} == {p: (1 if p == "/image.png" else 0) for p in never}


def test_second_run_returns_the_published_artifact_without_fetching(main_crawl):
    assert main_crawl["again"].path == main_crawl["ref"].path
    assert main_crawl["hits_after_second"] == main_crawl["hits"]


def test_stats_and_progress(main_crawl):
    ref, progress = main_crawl["ref"], main_crawl["progress"]
    stats = ref.stats
    assert stats["rows"] == len(KEPT) and stats["documents_by_source"] == {"urls": len(KEPT)}
    assert stats["failures_by_reason"] == dict(Counter(REFUSED.values()))
    assert stats["bytes_fetched"] >= stats["doc_bytes"] > 0
    assert stats["frontier_left"] == 0
    assert (ref.dir / "_manifest.json").is_file() and not (ref.dir / STATE_FILE).exists()
    assert len(shard_paths(ref.dir / "docs")) == 4  # 14 docs, 4 per shard
    assert progress.phases[0] == (100, "pages")
    assert progress.advanced == stats["pages_fetched"]


def test_bodies_are_raw_bytes_with_encoding_hints(main_crawl):
    site, docs = main_crawl["site"], main_crawl["docs"]
    by_url = {local(site, d["url"]): d for d in docs}
    for path in ("/cp1252.html", "/sjis.html", "/nodecl.html", "/text.txt"):
        assert by_url[path]["body"] == MAIN_ROUTES[path](1).body

    cp = by_url["/cp1252.html"]
    assert (cp["declared_encoding"], cp["detected_encoding"]) == ("cp1252", None)
    assert CP1252_TEXT in cp["body"].decode("cp1252")

    sj = by_url["/sjis.html"]  # declared only by <meta charset>
    assert (sj["declared_encoding"], sj["detected_encoding"]) == ("shift_jis", None)

    l1 = by_url["/latin1-meta.html"]  # declared only by <meta http-equiv>
    assert (l1["declared_encoding"], l1["detected_encoding"]) == ("iso8859-1", None)
    assert LATIN1_TEXT in l1["body"].decode(l1["declared_encoding"])

    nd = by_url["/nodecl.html"]  # declared nowhere: detected
    assert nd["declared_encoding"] is None and nd["detected_encoding"] is not None
    assert SJIS_TEXT in nd["body"].decode(nd["detected_encoding"])

    wrong = by_url["/wrong-decl.html"]  # declared utf-8, but it is not: detected as well
    assert wrong["declared_encoding"] == "utf-8"
    assert wrong["detected_encoding"] not in (None, "utf-8")

    assert by_url["/text.txt"]["content_type"] == "text/plain"
    assert by_url["/"]["content_type"] == "text/html"


# ----------------------------------------------------------------------------- safety, manners, budget


def test_unreachable_robots_txt_disallows_everything(tmp_path):
    with Site({"/robots.txt": fixed(Reply(503, b"down")), "/": page()}) as site:
        with pytest.raises(NoDocuments) as refused:
            run_crawl(crawl_config(site.url("/")), Workspace(tmp_path))
        assert str(refused.value) == (
            f"the crawl fetched no document: {site.url('/')} (robots): {site.url('/robots.txt')} answered HTTP 503; "
            "RFC 9309: an unreachable robots.txt disallows everything"
        )
        assert site.hits["/robots.txt"] == 2 and site.hits["/"] == 0  # retried, then obeyed


# ----------------------------------------------------------------------------- a crawl that kept nothing


def no_partial_left(ws: Workspace) -> bool:
    return ws.artifacts("crawl") == [] and not list((ws.root / "crawl").glob(".partial-*"))


def test_a_loopback_seed_is_refused_by_default_and_the_error_names_the_setting(tmp_path):
    ws = Workspace(tmp_path)
    with Site({"/": page(body="hello")}) as site:
        with pytest.raises(NoDocuments) as refused:  # allow_private is for private networks, not this machine
            run_crawl(crawl_config(site.url("/"), allow_loopback=False, allow_private=True), ws)
        assert str(refused.value) == (
            f"the crawl fetched no document: {site.url('/')} (private_address): "
            "127.0.0.1 is a loopback address; set crawl.allow_loopback: true to crawl it"
        )
        assert sum(site.hits.values()) == 0  # not even robots.txt
        assert no_partial_left(ws)

        ref = run_crawl(crawl_config(site.url("/"), allow_loopback=True), ws)
        assert ref.stats["rows"] == 1 and site.hits["/"] == 1


def test_a_crawl_that_kept_nothing_leaves_nothing_to_resume_and_crawls_again_once_fixed(tmp_path):
    paths = [f"/p{i}" for i in range(10)]
    with Site({}) as site:  # every page answers 404, for now
        # failure shards of 8 rows: the crawl checkpoints its frontier before it ends
        cfg = crawl_config(site.url("/"), urls=[site.url(p) for p in paths], docs_per_shard=1)
        ws = Workspace(tmp_path)
        with pytest.raises(NoDocuments, match=r": all 10 failures are http_error, e\.g\. http://\S+/p\d: HTTP 404 Not"):
            run_crawl(cfg, ws)
        assert no_partial_left(ws)

        site.routes.update({p: page(body=p) for p in paths})
        ref = run_crawl(cfg, ws)  # the same config: crawled afresh, not resumed into the old answer
        assert ref.stats["rows"] == 10 and ref.stats["resumes"] == 0
        assert all(site.hits[p] == 2 for p in paths)


def test_link_local_is_refused_even_with_private_and_loopback_allowed_and_so_is_a_redirect_into_it(tmp_path):
    metadata = "http://169.254.169.254/latest/meta-data/"  # a cloud's instance metadata, credentials included
    with Site({"/": redirect(metadata)}) as site:
        for i, seed in enumerate((metadata, "http://[fe80::1]/", site.url("/"))):
            cfg = crawl_config(
                seed, allow_private=True, allow_loopback=True, allow_hosts=["127.0.0.1", "169.254.169.254", "fe80::1"]
            )
            with pytest.raises(NoDocuments, match=r"is a link-local address; set crawl\.allow_link_local: true") as e:
                run_crawl(cfg, Workspace(tmp_path / str(i)))
        assert f"{site.url('/')} (private_address): redirected to {metadata}: 169.254.169.254 is" in str(e.value)
        assert site.hits["/"] == 1


def test_an_unresolvable_host_is_named_without_waiting_for_dns(tmp_path):
    # RFC 6761: .invalid never resolves, and the crawler knows it without asking a DNS server
    seed = "https://docs.lmforge.invalid/"
    with pytest.raises(NoDocuments) as e:
        run_crawl(crawl_config(seed), Workspace(tmp_path))
    assert str(e.value) == (
        f"the crawl fetched no document: {seed} (connection_error): host 'docs.lmforge.invalid' not found (DNS): "
        ".invalid names never resolve"
    )


def test_several_causes_are_counted_by_reason_with_one_example_each(tmp_path):
    with Site({"/": page()}) as site:
        seeds = [site.url("/"), "https://a.invalid/", "https://b.invalid/"]
        with pytest.raises(NoDocuments) as e:
            run_crawl(crawl_config(site.url("/"), urls=seeds, allow_loopback=False), Workspace(tmp_path))
    assert str(e.value).splitlines() == [
        "the crawl fetched no document:",
        "  2 connection_error, e.g. https://a.invalid/: host 'a.invalid' not found (DNS): .invalid names never resolve",
        f"  1 private_address: {site.url('/')}: 127.0.0.1 is a loopback address; set crawl.allow_loopback: true to "
        "crawl it",
    ]


def test_crawl_delay_spaces_requests(tmp_path):
    routes = {
        "/robots.txt": fixed(Reply(body=b"User-agent: *\nCrawl-delay: 1\n", headers={"Content-Type": "text/plain"})),
        "/": page("/x", "/y"),
        "/x": page(),
        "/y": page(),
    }
    with Site(routes) as site:
        run_crawl(crawl_config(site.url("/"), concurrency=4, per_host_concurrency=2), Workspace(tmp_path))
        starts = [t for path, t in site.times if path != "/robots.txt"]
        assert len(starts) == 3
        assert all(b - a >= 0.95 for a, b in zip(starts, starts[1:], strict=False))


def chain_site(n: int, delay_s: float = 0.0) -> dict[str, Route]:
    """/ links to /p0 ... /p{n-1}; each /pi links to /qi and off-site; no robots.txt (404: allow all)."""
    routes: dict[str, Route] = {"/": page(*(f"/p{i}" for i in range(n)))}
    for i in range(n):
        routes[f"/p{i}"] = fixed(Reply(body=html(f"/q{i}", f"http://elsewhere.invalid/{i % 5}"), delay_s=delay_s))
        routes[f"/q{i}"] = fixed(Reply(body=html(body=f"leaf {i}"), delay_s=delay_s))
    return routes


def test_max_pages_is_respected(tmp_path):
    with Site(chain_site(10)) as site:
        ref = run_crawl(crawl_config(site.url("/"), max_pages=4, concurrency=2), Workspace(tmp_path))
        docs = read_all(ref.dir / "docs", RAW_DOC)
        assert len(docs) == 4 and ref.stats["pages_fetched"] == 4
        assert sum(n for path, n in site.hits.items() if path != "/robots.txt") == 4
        assert ref.stats["frontier_left"] > 0


def test_a_capped_crawl_keeps_the_same_pages_whichever_answer_first(tmp_path):
    """/ links to five pages, each linking to three more: a budget of 13 pages ends inside the
    third level. Whichever second-level pages answer first, the crawl keeps the same pages:
    each level in URL order, a level only after the one before it."""
    kept = []
    for run, delay in enumerate((lambda i: 0.02 * i, lambda i: 0.02 * (4 - i))):
        routes: dict[str, Route] = {"/": page(*(f"/p{i}" for i in range(5)))}
        for i in range(5):
            routes[f"/p{i}"] = fixed(Reply(body=html(*(f"/p{i}/q{j}" for j in range(3))), delay_s=delay(i)))
            for j in range(3):
                routes[f"/p{i}/q{j}"] = page(body=f"leaf {i}.{j}")
        with Site(routes) as site:
            ref = run_crawl(crawl_config(site.url("/"), max_pages=13, concurrency=5), Workspace(tmp_path / str(run)))
            kept.append(sorted(urlsplit(d["url"]).path for d in read_all(ref.dir / "docs", RAW_DOC)))
    assert kept[0] == kept[1]
    third = sorted(f"/p{i}/q{j}" for i in range(5) for j in range(3))[:7]  # the third level's first 7, by URL
    assert kept[0] == sorted(["/", *(f"/p{i}" for i in range(5)), *third])


def test_what_follows_a_crawl_is_keyed_by_the_pages_it_holds_not_by_its_config_alone(tmp_path):
    routes = {"/": page("/a", "/b", "/c"), "/a": page(body="alpha"), "/b": page(body="beta"), "/c": page(body="gamma")}
    with Site(routes) as site:
        cfg = crawl_config(site.url("/"), concurrency=3)
        first = run_crawl(cfg, Workspace(tmp_path / "first"))
        again = run_crawl(cfg, Workspace(tmp_path / "again"))  # the same pages, fetched later, maybe in another order
        site.routes["/b"] = page(body="beta, edited")
        edited = run_crawl(cfg, Workspace(tmp_path / "edited"))
    assert first.fingerprint == again.fingerprint == edited.fingerprint  # a crawl's fingerprint is its config
    assert first.stats["content_digest"] == again.stats["content_digest"] != edited.stats["content_digest"]
    clean = CleanConfig()
    assert clean_fingerprint(clean, first) == clean_fingerprint(clean, again) != clean_fingerprint(clean, edited)


def test_a_refresh_is_a_new_crawl_that_later_runs_read_and_unchanged_pages_rebuild_nothing(tmp_path):
    routes = {"/": page("/a", "/b"), "/a": page(body="alpha"), "/b": page(body="beta")}
    clean = CleanConfig()
    with Site(routes) as site:
        cfg, ws = crawl_config(site.url("/"), concurrency=2), Workspace(tmp_path)
        first = run_crawl(cfg, ws)
        fetched = sum(site.hits.values())
        assert run_crawl(cfg, ws) == first and sum(site.hits.values()) == fetched  # crawled once per config

        same = run_crawl(cfg, ws, snapshot="2026-11-25T02:00:00Z")  # the nightly refresh
        assert sum(site.hits.values()) == 2 * fetched  # fetched again ...
        assert same.fingerprint != first.fingerprint  # ... into a new artifact; the first stays
        assert ws.is_published("crawl", first.fingerprint)
        assert clean_fingerprint(clean, same) == clean_fingerprint(clean, first)  # same pages: nothing to rebuild

        site.routes["/b"] = page(body="beta, edited")
        changed = run_crawl(cfg, ws, snapshot="2026-11-26T02:00:00Z")
        assert clean_fingerprint(clean, changed) != clean_fingerprint(clean, first)
        assert run_crawl(cfg, ws) == changed  # a run that does not refresh reads the newest snapshot
        assert run_crawl(cfg, ws, snapshot="2026-11-25T02:00:00Z") == same  # each snapshot stays addressable
        assert sum(site.hits.values()) == 3 * fetched


def test_gc_finds_the_copies_unchanged_refreshes_leave_and_keeps_what_runs_read_or_were_built_from(tmp_path):
    routes = {"/": page("/a", "/b"), "/a": page(body="alpha"), "/b": page(body="beta")}
    with Site(routes) as site:
        ws = Workspace(tmp_path)
        other = run_crawl(crawl_config(site.url("/"), max_pages=2), ws)  # another config's only crawl
        cfg = crawl_config(site.url("/"), concurrency=2)
        first = run_crawl(cfg, ws)
        cleaned = run_clean(CleanConfig(), first, ws)  # built from the first crawl: its manifest names it
        same = run_crawl(cfg, ws, snapshot="2026-11-25T02:00:00Z")  # the pages had not changed
        faster = crawl_config(site.url("/"), concurrency=4)  # the same config, run with other manners
        newest = run_crawl(faster, ws, snapshot="2026-11-26T02:00:00Z")  # nor had they the next night
        assert clean_fingerprint(CleanConfig(), newest) == cleaned.fingerprint  # nothing was built from either

        assert [a["fingerprint"] for a in redundant_snapshots(ws)] == [same.fingerprint]
        ws.remove("crawl", same.fingerprint)
        assert redundant_snapshots(ws) == []
        assert run_crawl(cfg, ws) == newest  # what runs read is still there
        assert all(ws.is_published("crawl", kept.fingerprint) for kept in (other, first, newest))


# ----------------------------------------------------------------------------- resume after a kill

_CHILD = """
import json, sys
from lm_core.config import CrawlConfig
from lm_core.crawl.stage import run_crawl
from lm_core.workspace import Workspace
run_crawl(CrawlConfig.model_validate(json.loads(sys.argv[1])), Workspace(sys.argv[2]))
"""


def doc_and_failure_rows(ref) -> tuple[list[str], list[tuple[str, str]]]:
    docs = [d["url"] for d in read_all(ref.dir / "docs", RAW_DOC)]
    failures = [(f["url"], f["reason"]) for f in read_all(ref.dir / "failures", FAILURE)]
    return docs, failures


def test_a_killed_crawl_resumes_to_the_same_documents(tmp_path):
    with Site(chain_site(25, delay_s=0.05)) as site:
        cfg = crawl_config(site.url("/"), docs_per_shard=2, concurrency=3)
        expected_docs, expected_failures = doc_and_failure_rows(run_crawl(cfg, Workspace(tmp_path / "whole")))
        assert len(expected_docs) == 51 and len(expected_failures) == 5

        ws = Workspace(tmp_path / "killed")
        partial_docs = ws.root / "crawl" / f".partial-{crawl_fingerprint(cfg)}" / "docs"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, cfg.model_dump_json(), str(ws.root)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            deadline = time.monotonic() + 30
            while len(shard_paths(partial_docs)) < 6:  # 12 of 51 documents stored
                assert child.poll() is None, "the crawl ended before it could be killed"
                assert time.monotonic() < deadline, "the crawl made no progress"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
        assert not ws.is_published("crawl", crawl_fingerprint(cfg))
        hits_before = sum(site.hits.values())

        ref = run_crawl(cfg, ws)
        docs, failures = doc_and_failure_rows(ref)
        assert sorted(docs) == sorted(expected_docs)  # none lost, none twice
        assert sorted(failures) == sorted(expected_failures)
        assert ref.stats["resumes"] == 1 and ref.stats["rows"] == 51
        assert sum(site.hits.values()) - hits_before < 51  # it went on from its frontier, not from scratch


# ----------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("raw, expected", [
    ("HTTP://Example.COM:80/a/./b/../c?#frag", "http://example.com/a/c"),
    ("https://example.com:443", "https://example.com/"),
    ("http://example.com:8080/", "http://example.com:8080/"),
    ("http://example.com/%7euser/%2fx?q=%e2%82%ac", "http://example.com/~user/%2Fx?q=%E2%82%AC"),
    ("http://example.com/a b/é", "http://example.com/a%20b/%C3%A9"),
    ("http://example.com/100%", "http://example.com/100%25"),
    ("http://example.com/../../x", "http://example.com/x"),
    ("http://example.com/p?", "http://example.com/p"),
    ("http://[::0001]:8080/x", "http://[::1]:8080/x"),
    ("http://bücher.de/", "http://xn--bcher-kva.de/"),
    ("http://example.com/b?y=2&x=1", "http://example.com/b?y=2&x=1"),  # query order kept
])  # fmt: skip
def test_normalize_url(raw, expected):
    assert normalize_url(raw) == expected
    assert normalize_url(expected) == expected  # idempotent


def test_normalize_url_resolves_and_refuses():
    assert normalize_url("../c.html", base="http://h.org/a/b/page.html") == "http://h.org/a/c.html"
    with pytest.raises(UnsupportedScheme):
        normalize_url("mailto:a@b.org")
    for bad in ("http://h.org:99999/", "http://[oops/", "http://bad host/", "http:///nohost"):
        with pytest.raises(BadURL):
            normalize_url(bad)


def test_scope():
    scope = Scope.build(["https://docs.example.org/guide/"], exclude=[r"\.pdf$"])
    assert scope.refusal("https://docs.example.org/other") is None
    assert scope.refusal("https://evil.org/")[0] == reasons.OFF_SITE
    assert scope.refusal("https://docs.example.org/x.pdf")[0] == reasons.EXCLUDED
    wide = Scope.build([], allow_hosts=["*.example.org"], allow_prefixes=["https://a.example.org/docs/"])
    assert wide.refusal("https://a.example.org/docs/x") is None
    assert wide.refusal("https://a.example.org/blog/x")[0] == reasons.OFF_SITE
    assert wide.host_allowed("b.c.example.org") and not wide.host_allowed("example.org.evil.com")


def test_public_addresses():
    assert is_public_address("93.184.216.34") and is_public_address("2606:4700::1111")
    for private in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1%eth0",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
    ):
        assert not is_public_address(private), private


@pytest.mark.parametrize("address, kind", [
    ("93.184.216.34", None), ("2606:4700::1111", None),
    ("127.0.0.1", LOOPBACK), ("127.8.9.10", LOOPBACK), ("::1", LOOPBACK), ("::ffff:127.0.0.1", LOOPBACK),
    ("0.0.0.0", LOOPBACK), ("::", LOOPBACK),  # connecting to the unspecified address reaches this machine
    ("169.254.169.254", LINK_LOCAL), ("fe80::1%eth0", LINK_LOCAL), ("::ffff:169.254.169.254", LINK_LOCAL),
    ("64:ff9b::a9fe:a9fe", LINK_LOCAL),  # 169.254.169.254 through a NAT64 gateway
    ("10.1.2.3", PRIVATE), ("192.168.0.1", PRIVATE), ("100.64.0.1", PRIVATE), ("fd00::1", PRIVATE),
    ("224.0.0.1", PRIVATE), ("240.0.0.1", PRIVATE),
])  # fmt: skip
def test_each_kind_of_non_public_address_has_its_own_setting(address, kind):
    assert address_kind(address) == kind


def test_extract_links_honours_base_and_nofollow():
    body = b"""<html><head><base href="http://h.org/docs/"></head><body>
      <a href="a.html">a</a> <a href="/b.html" rel="nofollow">b</a> <a href="#top">top</a>
      <area href="c.html"> <link href="style.css"> <a href="a.html">again</a></body></html>"""
    assert extract_links(body, "http://h.org/index.html") == ["http://h.org/docs/a.html", "http://h.org/docs/c.html"]
    nofollow_page = b'<html><head><meta name="robots" content="noindex, nofollow"></head><a href="x">x</a></html>'
    assert extract_links(nofollow_page, "http://h.org/") == []
    assert extract_links(b"", "http://h.org/") == []


def test_sniff_encodings():
    assert sniff(b"\xef\xbb\xbfhello", "text/plain").declared == "utf-8"  # from the BOM
    assert sniff(b"<meta charset='koi8-r'>", "text/html").declared == "koi8-r"
    assert sniff(b"plain", "text/plain; charset=x-unknown").declared == "x-unknown"  # kept, and:
    assert sniff(b"plain", "text/plain; charset=x-unknown").detected == "utf-8"
    assert sniff("naïve".encode(), "text/plain") == Encodings(None, "utf-8")  # nothing declared: detected
