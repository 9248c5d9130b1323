"""The web crawler: breadth-first within a scope, polite, bounded, and resumable.

One `WebCrawler` crawls one web source (the `urls` seeds, or the pydoc demo site) with
`concurrency` workers over one `httpx.AsyncClient`. For each URL taken from the frontier:

1. address safety: hosts resolving to loopback, private or link-local addresses are refused
   unless their own setting allows them (see `AddressGuard`), as are hosts not found (DNS);
2. robots.txt of the URL's origin, fetched once with the same client (see `robots.py`);
   its Crawl-delay raises that host's delay;
3. GET, holding one of the host's `per_host_concurrency` slots, at least `delay_s` after the
   previous request to that host started; 5xx, 429, timeouts and dropped connections are
   retried with exponential backoff (a Retry-After header lengthens the pause, up to 60 s);
4. redirects are followed by hand, so that every hop is normalised and checked like a link:
   scope, address safety, robots, a loop in the chain, and `max_redirects`;
5. the content type is checked from the headers and the size from Content-Length before the
   body is read; the body is streamed and abandoned past `max_bytes`;
6. a kept page becomes a document with its raw bytes (never decoded here) and its encoding
   hints; if it is HTML and shallower than `max_depth`, its links join the frontier.

Every URL ends as exactly one document or one failure, except one that redirects to a URL
already known, which that URL stands for. Each distinct refused link (off-site, excluded,
malformed) is recorded once; links from pages at `max_depth` are not looked at. `max_pages`
counts requested pages, whatever their outcome; URLs refused before any request (robots, a
private address) do not count.

Resumability: all bookkeeping happens in synchronous steps between awaits, and after each
step the crawler calls `sink.commit()`. At that moment `snapshot()` (the queue, with the
URLs in flight put back at its front, and the seen set) agrees exactly with what the sink has
received, so a checkpoint taken there can be resumed without losing or repeating a page.

The frontier goes level by level (breadth-first by depth), each level in URL order, and a level
starts only when the one before it is done. Which pages a crawl capped by `max_pages` keeps
therefore does not depend on which answered first: the same site gives the same pages, and a
refresh of an unchanged site the same content digest. The price is a wait for each level's
slowest page. Workers take URLs in that order from one queue, so a host that is slow or has a
long delay can hold up workers that could serve other hosts; fine for focused crawls of a few
sites.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from lm_core.config import CrawlConfig
from lm_core.crawl import reasons, rows
from lm_core.crawl.encoding import HTML_TYPES, media_type, sniff
from lm_core.crawl.links import extract_links
from lm_core.crawl.robots import MAX_ROBOTS_BYTES, MAX_ROBOTS_REDIRECTS, RobotsRules, rules_for_status
from lm_core.crawl.urls import AddressGuard, BadURL, Scope, UnsupportedScheme, host_of, normalize_url, origin

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_RETRY_AFTER_S = 60.0


def netrc_auth() -> httpx.Auth | None:
    """Credentials for sites that need them, from `~/.netrc` (or the file `NETRC` names), sent
    only to the hosts it lists: a seed URL carries none (it would be stored with the config,
    the manifests and the documents; see CrawlConfig's check)."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    return httpx.NetRCAuth(str(path)) if path.is_file() else None


class CrawlSink(Protocol):
    """Where a crawl's rows go (the stage's shard writers)."""

    def emit(self, item: rows.Doc | rows.Failure) -> None: ...

    def fetched(self, n_bytes: int) -> None:
        """One page was requested (counts towards max_pages); `n_bytes` body bytes were read."""

    def commit(self) -> None:
        """A consistent point: everything emitted so far agrees with the crawler's `snapshot()`."""


@dataclass(frozen=True)
class UrlAlias:
    """Stored URLs say `public` where the live server is at `real`: the pydoc demo runs on a new
    port each time, yet its documents and a resumed frontier must keep their URLs."""

    real: str
    public: str

    def to_public(self, url: str) -> str:
        return self.public + url[len(self.real) :] if url.startswith(self.real) else url

    def to_real(self, url: str) -> str:
        return self.real + url[len(self.public) :] if url.startswith(self.public) else url


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        """A 5xx, a 429, a timeout or a dropped connection may go away on a second try."""
        if self.reason in (reasons.TIMEOUT, reasons.CONNECTION_ERROR):
            return True
        status = self.status or 0
        return self.reason == reasons.HTTP_ERROR and (status == 429 or status >= 500)


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def is_redirect(self) -> bool:
        return self.status in REDIRECT_STATUSES


class _Host:
    """Politeness towards one host: a few concurrent requests, their starts spaced by a delay."""

    def __init__(self, concurrency: int, delay_s: float):
        self.slots = asyncio.Semaphore(concurrency)
        self.delay_s = delay_s
        self.next_start = 0.0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.slots:
            now = asyncio.get_running_loop().time()
            start = max(now, self.next_start)
            self.next_start = start + self.delay_s  # booked before sleeping: concurrent slots queue up
            if start > now:
                await asyncio.sleep(start - now)
            yield


def _describe(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:  # absent, or an HTTP date (rare; the backoff applies)
        return None


def _content_length(headers: httpx.Headers) -> int | None:
    try:
        return int(headers.get("content-length", ""))
    except ValueError:
        return None


class WebCrawler:
    def __init__(
        self,
        cfg: CrawlConfig,
        *,
        source: str,
        seeds: Sequence[str],
        scope: Scope,
        guard: AddressGuard,
        sink: CrawlSink,
        page_budget: int,
        state: dict | None = None,
        alias: UrlAlias | None = None,
    ):
        self.cfg, self.source, self.scope, self.guard, self.sink = cfg, source, scope, guard, sink
        self.alias = alias
        self._seeds = list(seeds)
        self._queue: deque[tuple[str, int]] = deque()  # (url, depth) of the level being crawled, in URL order
        self._next_level: list[tuple[str, int]] = []  # links found on it, queued when it is done
        self._level = 0  # the depth being crawled
        self._seen: set[str] = set()  # queued, in flight, done, refused, or claimed by a redirect
        self._in_flight: dict[str, int] = {}  # taken from the queue, outcome not yet emitted
        self._claimed: dict[str, list[str]] = {}  # in-flight url -> redirect targets it has claimed
        self._budget = page_budget  # pages still allowed
        self._reserved = 0  # in-flight URLs, each holding one page of the budget
        self._hosts: dict[str, _Host] = {}  # by host name
        self._robots: dict[str, RobotsRules] = {}  # by origin: robots.txt is per scheme, host and port
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self._types = frozenset(t.lower() for t in cfg.content_types)
        self._restored = state is not None
        self.stopped_by_budget = False
        if state is not None:
            frontier = [(self._real(u), d) for u, d in state["queue"]]
            self._level = min((d for _, d in frontier), default=0)
            # sorted: the level may not have been started (the crawl stopped between levels)
            self._queue.extend(sorted((u, d) for u, d in frontier if d == self._level))
            self._next_level.extend((u, d) for u, d in frontier if d != self._level)
            self._seen.update(self._real(u) for u in state["seen"])

    # --------------------------------------------------------------------- state

    def _public(self, url: str) -> str:
        return self.alias.to_public(url) if self.alias else url

    def _real(self, url: str) -> str:
        return self.alias.to_real(url) if self.alias else url

    def snapshot(self) -> dict:
        """The frontier, as JSON-able data: what a resumed crawler starts from."""
        claimed = {t for targets in self._claimed.values() for t in targets}  # in-flight chains will claim them again
        queue = [*self._in_flight.items(), *self._queue, *self._next_level]
        return {
            "queue": [[self._public(u), d] for u, d in queue],
            "seen": sorted(self._public(u) for u in self._seen - claimed),
        }

    @property
    def frontier_left(self) -> int:
        """URLs not crawled because max_pages was reached."""
        return len(self._queue) + len(self._next_level) if self.stopped_by_budget else 0

    # --------------------------------------------------------------------- run

    async def run(self) -> None:
        self._changed = asyncio.Event()
        if not self._restored:
            for seed in self._seeds:
                self._discover(seed, 0)
            self._queue = deque(sorted(self._queue))  # the seeds are a level too
            self.sink.commit()
        cfg = self.cfg
        timeout = httpx.Timeout(
            connect=cfg.connect_timeout_s, read=cfg.read_timeout_s, write=cfg.read_timeout_s, pool=None
        )
        accept = ", ".join([*cfg.content_types, "*/*;q=0.1"])
        async with httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
            headers={"User-Agent": cfg.user_agent, "Accept": accept},
            follow_redirects=False,  # each hop is checked here
            trust_env=False,  # direct connections: proxies from the environment would bypass the address checks
            auth=netrc_auth(),
        ) as client:
            self._client = client
            workers = [asyncio.create_task(self._worker()) for _ in range(cfg.concurrency)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while (item := await self._next()) is not None:
            await self._crawl(*item)

    async def _next(self) -> tuple[str, int] | None:
        while True:
            if not self._queue and not self._in_flight and self._next_level:  # a level is done
                self._level += 1
                self._queue.extend(sorted(self._next_level))
                self._next_level.clear()
            if self._queue and self._reserved < self._budget:
                url, depth = self._queue.popleft()
                self._in_flight[url] = depth
                self._reserved += 1
                return url, depth
            if not self._in_flight:  # nothing running could add work or give budget back: done
                self.stopped_by_budget = bool(self._queue or self._next_level)
                self._changed.set()
                return None
            self._changed.clear()
            await self._changed.wait()

    # --------------------------------------------------------------------- one URL

    async def _crawl(self, url: str, depth: int) -> None:
        chain = [url]
        current = url
        fetched, n_bytes = False, 0
        while True:
            refusal = await self._gate(current)
            if refusal is not None:
                if current != url:
                    refusal = Refusal(refusal.reason, f"redirected to {current}: {refusal.detail}")
                return self._finish(url, depth, fetched, n_bytes, refusal)
            result, n = await self._fetch(current)
            fetched, n_bytes = True, n_bytes + n
            if isinstance(result, Refusal):
                return self._finish(url, depth, fetched, n_bytes, result)
            if not result.is_redirect:
                return self._finish(url, depth, fetched, n_bytes, result)
            target = self._follow(chain, result)
            if isinstance(target, Refusal):
                return self._finish(url, depth, fetched, n_bytes, target)
            if target is None:  # already seen: that URL is (or will be) kept under its own name
                return self._finish(url, depth, fetched, n_bytes, None)
            self._seen.add(target)
            self._claimed.setdefault(url, []).append(target)
            chain.append(target)
            current = target

    async def _gate(self, url: str) -> Refusal | None:
        refused = await self.guard.refusal(url)
        if refused is not None:
            return Refusal(*refused)
        if self.cfg.obey_robots:
            rules = await self._rules(url)
            if not rules.allows(url, self.cfg.user_agent):
                return Refusal(reasons.ROBOTS, rules.why)
        return None

    def _follow(self, chain: list[str], response: Response) -> str | Refusal | None:
        """The next hop of a redirect chain; a refusal; or None if the target is already known."""
        location = response.headers["location"]
        try:
            target = normalize_url(location, base=response.url)
        except BadURL as e:
            return Refusal(reasons.BAD_URL, f"redirect to {location!r}: {e}", response.status)
        if target in chain:
            return Refusal(reasons.REDIRECT_LOOP, " -> ".join([*chain, target]), response.status)
        if len(chain) > self.cfg.max_redirects:
            return Refusal(
                reasons.TOO_MANY_REDIRECTS,
                f"more than {self.cfg.max_redirects}: {' -> '.join([*chain, target])}",
                response.status,
            )
        out_of_scope = self.scope.refusal(target)
        if out_of_scope is not None:
            return Refusal(out_of_scope[0], f"redirected to {target}: {out_of_scope[1]}", response.status)
        return None if target in self._seen else target

    def _finish(self, url: str, depth: int, fetched: bool, n_bytes: int, outcome: Response | Refusal | None) -> None:
        """Record the outcome of one frontier URL: one synchronous step, then a commit."""
        if isinstance(outcome, Response):  # analyse before touching any state
            media = media_type(outcome.headers.get("content-type"))
            encodings = sniff(outcome.body, outcome.headers.get("content-type"), media)
            links = []
            if media in HTML_TYPES and depth < self.cfg.max_depth:
                links = extract_links(outcome.body, outcome.url, encodings.best)
        del self._in_flight[url]
        self._claimed.pop(url, None)
        self._reserved -= 1
        if fetched:
            self._budget -= 1
            self.sink.fetched(n_bytes)
        if isinstance(outcome, Response):
            for link in links:
                self._discover(link, depth + 1)
            self.sink.emit(
                rows.doc(
                    self._public(outcome.url),
                    self.source,
                    outcome.body,
                    content_type=media,
                    encodings=encodings,
                    status=outcome.status,
                )
            )
        elif isinstance(outcome, Refusal):
            self._fail(url, outcome.reason, outcome.detail, outcome.status)
        self.sink.commit()
        self._changed.set()

    def _discover(self, link: str, depth: int) -> None:
        """A seed or a link found on a page: queue it, or record once why not."""
        try:
            url = normalize_url(link)
        except UnsupportedScheme:
            return
        except BadURL as e:
            if link not in self._seen:
                self._seen.add(link)
                self._fail(link, reasons.BAD_URL, str(e))
            return
        if url in self._seen:
            return
        self._seen.add(url)
        refused = self.scope.refusal(url)
        if refused is not None:
            self._fail(url, *refused)
            return
        (self._queue if depth == self._level else self._next_level).append((url, depth))

    def _fail(self, url: str, reason: str, detail: str, status: int | None = None) -> None:
        if self.alias is not None:
            detail = detail.replace(self.alias.real, self.alias.public)
        self.sink.emit(rows.failure(self._public(url), self.source, reason, detail, status))

    # --------------------------------------------------------------------- HTTP

    def _host(self, url: str) -> _Host:
        name = host_of(url)
        if name not in self._hosts:
            self._hosts[name] = _Host(self.cfg.per_host_concurrency, self.cfg.delay_s)
        return self._hosts[name]

    async def _rules(self, url: str) -> RobotsRules:
        site = origin(url)
        async with self._robots_locks.setdefault(site, asyncio.Lock()):  # one fetch per origin
            if site not in self._robots:
                rules = self._robots[site] = await self._fetch_robots(site + "/robots.txt")
                delay = rules.crawl_delay(self.cfg.user_agent)
                if delay:  # Crawl-delay is a minimum: it never shortens delay_s
                    host = self._host(url)
                    host.delay_s = max(host.delay_s, delay)
        return self._robots[site]

    async def _fetch_robots(self, url: str) -> RobotsRules:
        for _ in range(MAX_ROBOTS_REDIRECTS + 1):
            refused = await self.guard.refusal(url)
            if refused is not None:
                return RobotsRules.unreachable(f"{url}: {refused[1]}")
            result, _ = await self._fetch(url, robots=True)
            if isinstance(result, Refusal):
                if result.reason == reasons.HTTP_ERROR and result.status is not None:
                    return rules_for_status(result.status, b"", url)
                return RobotsRules.unreachable(f"{url}: {result.detail}")
            if not result.is_redirect:
                return rules_for_status(result.status, result.body, url)
            try:
                url = normalize_url(result.headers["location"], base=url)
            except BadURL as e:
                return RobotsRules.unavailable(f"{url} redirects to a bad URL: {e}")
        return RobotsRules.unavailable(f"more than {MAX_ROBOTS_REDIRECTS} redirects for robots.txt")

    async def _fetch(self, url: str, robots: bool = False) -> tuple[Response | Refusal, int]:
        """GET with retries. Returns the response or the refusal, and the body bytes read."""
        host = self._host(url)
        n_bytes = 0
        for attempt in range(self.cfg.retries + 1):
            async with host.slot():
                result, n = await self._get(url, robots)
            n_bytes += n
            if not (isinstance(result, Refusal) and result.retryable) or attempt == self.cfg.retries:
                return result, n_bytes
            pause = self.cfg.backoff_s * 2**attempt
            if result.retry_after is not None:
                pause = max(pause, min(result.retry_after, MAX_RETRY_AFTER_S))
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _get(self, url: str, robots: bool) -> tuple[Response | Refusal, int]:
        cap = MAX_ROBOTS_BYTES if robots else self.cfg.max_bytes
        try:
            async with self._client.stream("GET", url) as resp:
                status = resp.status_code
                if status in REDIRECT_STATUSES and resp.headers.get("location"):
                    return Response(url, status, resp.headers, b""), 0
                if not 200 <= status < 300:
                    why = f"HTTP {status} {resp.reason_phrase}".strip()
                    return Refusal(reasons.HTTP_ERROR, why, status, _retry_after(resp.headers)), 0
                if not robots:
                    media = media_type(resp.headers.get("content-type"))
                    if media not in self._types:
                        return Refusal(
                            reasons.CONTENT_TYPE, f"{media or 'no Content-Type'} is not in content_types", status
                        ), 0
                    declared = _content_length(resp.headers)
                    if declared is not None and declared > cap:
                        return Refusal(reasons.TOO_LARGE, f"Content-Length {declared} > max_bytes {cap}", status), 0
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > cap:
                        if robots:  # the RFC lets a crawler read just the start of a huge robots.txt
                            del body[cap:]
                            break
                        return Refusal(reasons.TOO_LARGE, f"more than max_bytes {cap} bytes", status), len(body)
                return Response(url, status, resp.headers, bytes(body)), len(body)
        except httpx.TimeoutException as e:
            return Refusal(reasons.TIMEOUT, _describe(e)), 0
        except httpx.DecodingError as e:  # a broken gzip/deflate body
            return Refusal(reasons.HTTP_ERROR, f"undecodable Content-Encoding: {_describe(e)}"), 0
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            return Refusal(reasons.BAD_URL, _describe(e)), 0
        except httpx.TransportError as e:
            return Refusal(reasons.CONNECTION_ERROR, _describe(e)), 0
