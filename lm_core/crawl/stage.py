"""The crawl stage: every configured source into one artifact, resumable after a crash.

    crawl/<fp>/docs/part-*.arrow       RAW_DOC    documents, bodies as raw bytes
    crawl/<fp>/failures/part-*.arrow   FAILURE    everything refused or failed, with its reason

Sources run one after another in a fixed order: `files`, `warc`, `hf_dataset` (in config
order), then the web: `urls`, then the `pydoc` demo site. `max_pages` is one budget for all the
web pages of the crawl.

Resume: whenever a shard is written, both writers are flushed and the crawl's state (shard
indices, counters, finished sources, and the current source's position: rows consumed for a
local source, the frontier for a web one) is written atomically next to them. Shards and state
therefore always agree. A crawl killed at any moment resumes, on the next call with the same
config and snapshot, from its last checkpoint: shards written after it are discarded and
redone, and nothing is lost or stored twice. The state file is removed before the artifact is
published.

A crawl that kept no document is an error (`NoDocuments`), not an artifact: nothing is published,
its partial folder is removed (a later attempt, once the cause is fixed, crawls again instead of
resuming into the same answer), and the message sums up why, from the failures by reason.

Snapshots: a config is crawled once, and later runs read that crawl. A refresh (the nightly
`data` schedule, `--refresh`) crawls the same config again under a new snapshot label into a
new artifact, which runs that do not refresh then read. Its content digest (below) is what the
clean stage's fingerprint takes: a refresh that found the same pages rebuilds nothing after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lm_core.config import Config, CrawlConfig
from lm_core.crawl import pydoc_site, rows
from lm_core.crawl.sources import CrawlInputError, Row, file_rows, hf_rows, local_inputs, match_files, warc_rows
from lm_core.crawl.urls import AddressGuard, Scope
from lm_core.crawl.web import UrlAlias, WebCrawler
from lm_core.progress import NullProgress, Progress
from lm_core.schemas import FAILURE, RAW_DOC
from lm_core.shards import SUFFIX, ShardWriter, iter_batches, shard_paths
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint, write_json_atomic

if TYPE_CHECKING:
    from lm_core.stages import Inputs, StageRun

log = logging.getLogger(__name__)

# bump when the same config would produce different documents (2: levels in URL order, stable pydoc pages)
CODE_VERSION = 2
STATE_FILE = "_crawl_state.json"
DOCS_DIR, FAILURES_DIR = "docs", "failures"
# failure rows carry no body: their shards hold more rows, so that checkpoints (which flush both
# writers) mostly happen on full document shards
FAILURES_PER_DOC_SHARD = 8


def crawl_inputs(cfg: CrawlConfig, snapshot: str = "") -> dict[str, str]:
    """What besides the config decides the output: size and mtime of the local files read, for
    the pydoc demo the Python that serves it (not the server's random port), and the snapshot:
    a label that makes a refresh a new crawl of the same config (empty: the config's first)."""
    inputs = local_inputs(cfg)
    if cfg.pydoc:
        inputs["pydoc"] = pydoc_site.site_identity()
    return _labelled(inputs, snapshot)


def _labelled(inputs: dict[str, str], snapshot: str) -> dict[str, str]:
    return {**inputs, "snapshot": snapshot} if snapshot else inputs


def _fingerprint(cfg: CrawlConfig, inputs: dict[str, str]) -> str:
    return fingerprint("crawl", cfg.fingerprint_fields(), inputs, CODE_VERSION)


def crawl_fingerprint(cfg: CrawlConfig, snapshot: str = "") -> str:
    return _fingerprint(cfg, crawl_inputs(cfg, snapshot))


def current_snapshot(cfg: CrawlConfig, ws: Workspace) -> str:
    """The snapshot label of the newest published crawl of this config: what a run that does not
    refresh reads (`""`, the config's first crawl, when none is published yet)."""
    base = crawl_inputs(cfg)  # once: local sources are looked at (stat) to compute it
    for artifact in ws.artifacts("crawl"):  # newest first
        label = artifact["manifest"].get("inputs", {}).get("snapshot", "")
        if _fingerprint(cfg, _labelled(base, label)) == artifact["fingerprint"]:
            return label
    return ""


def redundant_snapshots(ws: Workspace) -> list[dict]:
    """Published crawls that no artifact was built from, except the newest crawl of each config
    (what runs that do not refresh read): the copies nightly refreshes leave when they find the
    pages they found before (clean, which takes a crawl by its content, kept the earlier one's
    artifact). Removing them loses no lineage, since no manifest names them as an input."""
    artifacts = ws.artifacts()  # newest first
    named = {v for a in artifacts if a["stage"] != "crawl" for v in a["manifest"].get("inputs", {}).values()}
    seen: set[str] = set()
    out = []
    for artifact in (a for a in artifacts if a["stage"] == "crawl"):
        of_config = _unlabelled_fingerprint(artifact["manifest"])
        if of_config in seen and artifact["fingerprint"] not in named:
            out.append(artifact)
        seen.add(of_config)
    return out


def _unlabelled_fingerprint(manifest: dict) -> str:
    """What a published crawl's fingerprint would be without its snapshot label: the same for
    every snapshot of one config (settings that are PERFORMANCE_ONLY aside)."""
    sources = {k: v for k, v in manifest.get("inputs", {}).items() if k != "snapshot"}
    try:
        return _fingerprint(CrawlConfig.model_validate(manifest.get("config", {})), sources)
    except ValueError:  # a config of another lmforge version: its exact settings, then
        return json.dumps([manifest.get("config"), sources], sort_keys=True)


def crawl_key(cfg: Config, inputs: Inputs, ws: Workspace, snapshot: str | None = None) -> StageKey:
    """The crawl of `snapshot` (None: the newest crawl of this config, or its first)."""
    return _key(cfg.crawl, ws, snapshot)


def _key(cfg: CrawlConfig, ws: Workspace, snapshot: str | None) -> StageKey:
    if snapshot is None:
        snapshot = current_snapshot(cfg, ws)
    inputs = crawl_inputs(cfg, snapshot)
    return StageKey(
        stage="crawl", fingerprint=_fingerprint(cfg, inputs), config=cfg.model_dump(mode="json"), inputs=inputs
    )


def crawl_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_crawl(cfg.crawl, ws, run.progress, key=key)


def run_crawl(
    cfg: CrawlConfig,
    ws: Workspace,
    progress: Progress = NullProgress(),
    snapshot: str | None = None,
    key: StageKey | None = None,
) -> ArtifactRef:
    """Crawl every source of `cfg` into a published `crawl` artifact, or return the one already
    published. `snapshot` labels a refresh: a new label fetches everything again into a new
    artifact; None reads the newest crawl of this config (crawling once if there is none). An
    interrupted crawl resumes where it stopped, when called again with the same label. `key`:
    computed already (`crawl_key`), in place of `snapshot`."""
    key = key or _key(cfg, ws, snapshot)
    fp = key.fingerprint
    with ws.build("crawl", fp, config=key.config, inputs=key.inputs, resume=True) as build:
        if build.published:
            return build.ref
        out = CrawlOutput(build.dir, cfg.docs_per_shard, progress)
        _CrawlRun(cfg, out, progress).run()
        out.close()
        if not out.documents_by_source:  # close() dropped the resume state; the failures go too
            shutil.rmtree(build.dir)  # so that an attempt after a fix crawls afresh, with nothing stale
            raise NoDocuments(no_documents_message(cfg, out))
        build.stats = {**out.stats(), "content_digest": documents_digest(build.dir / DOCS_DIR)}
        log.info("crawl %s: %s", fp, json.dumps(build.stats, sort_keys=True))
    assert build.ref is not None
    return build.ref


class NoDocuments(CrawlInputError):
    """A crawl that kept no document; the message says why (see `no_documents_message`)."""


def no_documents_message(cfg: CrawlConfig, out: CrawlOutput) -> str:
    """Why a crawl kept nothing: its empty folders, then its failures by reason, commonest first,
    each with one example (a URL or file, and the detail of its failure, which names the fix)."""
    causes = [
        f"files[{i}]: folder {src.path!r} holds no files (glob {src.glob!r} matched nothing)"
        for i, src in enumerate(cfg.files)
        if not match_files(src)
    ]
    failures = out.failures_by_reason
    for reason, n in failures.most_common():
        url, detail = out.failure_examples.get(reason, ("?", "?"))
        if failures.total() == 1:
            causes.append(f"{url} ({reason}): {detail}")
        elif len(failures) == 1:
            causes.append(f"all {n} failures are {reason}, e.g. {url}: {detail}")
        else:
            causes.append(f"{n} {reason}{', e.g.' if n > 1 else ':'} {url}: {detail}")
    if not causes:
        causes.append("its sources yielded no record at all")
    if len(causes) == 1:
        return f"the crawl fetched no document: {causes[0]}"
    return "the crawl fetched no document:\n" + "\n".join(f"  {cause}" for cause in causes)


# The fields of a document that the stages after the crawl read (its fetch time and status are
# not among them), hashed into its content digest.
DIGESTED = ("url", "source", "content_type", "declared_encoding", "detected_encoding", "body")


def documents_digest(folder: Path) -> str:
    """What a crawl holds, as one digest: each document's DIGESTED fields, in URL order. Fetch
    times and the order pages arrived in do not count (the clean stage reads documents in URL
    order), so two crawls that kept the same pages share a digest, and the stages after them
    their artifacts; two that did not, do not."""
    docs = []
    for path in shard_paths(folder):
        for batch in iter_batches(path, RAW_DOC):
            for doc in batch.select(list(DIGESTED)).to_pylist():
                h = hashlib.sha256()
                for name in DIGESTED:  # length-prefixed: no field can pass for the next one
                    value = doc[name]
                    data = b"" if value is None else value if isinstance(value, bytes) else value.encode()
                    h.update((len(data) if value is not None else -1).to_bytes(8, "little", signed=True) + data)
                docs.append(f"{doc['url']}\0{doc['source']}\0{h.hexdigest()}\n")
    h = hashlib.sha256(b"lmforge-crawl-documents-v2\n")
    for line in sorted(docs):
        h.update(line.encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- output + checkpoint


class CrawlOutput:
    """The shard writers, the counters, and the checkpoint that ties them to the crawl's position.

    It is the web crawler's sink; local sources feed it the same way.
    """

    def __init__(self, folder: Path, rows_per_shard: int, progress: Progress = NullProgress()):
        self.folder = Path(folder)
        self.progress = progress
        state = self._load_state()
        self.done: list[str] = state.get("done", [])  # finished sources
        self.current: dict | None = state.get("current")  # the interrupted source's position
        self.position: Callable[[], dict] | None = None  # the running source's position, for checkpoints
        t = state.get("tally", {})
        self.documents_by_source = Counter(t.get("documents_by_source", {}))
        self.failures_by_reason = Counter(t.get("failures_by_reason", {}))
        self.failure_examples: dict[str, list[str]] = state.get("failure_examples", {})  # reason -> [url, detail]
        self.pages_fetched = t.get("pages_fetched", 0)
        self.bytes_fetched = t.get("bytes_fetched", 0)
        self.doc_bytes = t.get("doc_bytes", 0)
        self.frontier_left = t.get("frontier_left", 0)
        self.resumes = t.get("resumes", 0) + (1 if state else 0)
        docs_next, failures_next = state.get("docs_next", 0), state.get("failures_next", 0)
        _discard_after(self.folder / DOCS_DIR, docs_next)
        _discard_after(self.folder / FAILURES_DIR, failures_next)
        for stray in self.folder.glob(".*.tmp"):  # a state write cut short
            stray.unlink()
        self.docs = ShardWriter(self.folder / DOCS_DIR, RAW_DOC, rows_per_shard, first_index=docs_next)
        self.failures = ShardWriter(
            self.folder / FAILURES_DIR, FAILURE, FAILURES_PER_DOC_SHARD * rows_per_shard, first_index=failures_next
        )
        self._checkpointed = (docs_next, failures_next)

    def _load_state(self) -> dict:
        path = self.folder / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:  # written atomically, so unexpected
            log.warning("crawl state %s is unreadable (%s): starting over", path, e)
            return {}
        if state.get("code_version") != CODE_VERSION:
            return {}
        log.info("resuming the crawl in %s (%s finished)", self.folder, ", ".join(state.get("done", [])) or "no source")
        return state

    # the sink interface (see lm_core.crawl.web.CrawlSink)

    def emit(self, item: Row) -> None:
        row = item.row
        if isinstance(item, rows.Doc):
            self.docs.add(row)
            self.documents_by_source[row["source"]] += 1
            self.doc_bytes += len(row["body"])
        else:
            self.failures.add(row)
            self.failures_by_reason[row["reason"]] += 1
            self.failure_examples.setdefault(row["reason"], [row["url"], row["detail"] or ""])

    def fetched(self, n_bytes: int) -> None:
        self.pages_fetched += 1
        self.bytes_fetched += n_bytes
        self.progress.advance()

    def commit(self) -> None:
        """Called at consistent points; checkpoints when a shard has been written since the last one."""
        if (self.docs.index, self.failures.index) != self._checkpointed:
            self.checkpoint()

    def checkpoint(self) -> None:
        self.docs.flush()
        self.failures.flush()
        state = {
            "code_version": CODE_VERSION,
            "docs_next": self.docs.index,
            "failures_next": self.failures.index,
            "done": self.done,
            "current": self.position() if self.position else None,
            "tally": self._tally(),
            "failure_examples": self.failure_examples,
        }
        write_json_atomic(self.folder / STATE_FILE, state)
        self._checkpointed = (self.docs.index, self.failures.index)

    def source_done(self, source_id: str) -> None:
        self.done.append(source_id)
        self.current = None
        self.position = None

    # the end

    def close(self) -> None:
        self.docs.close()
        self.failures.close()
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def _tally(self) -> dict[str, Any]:
        return {
            "documents_by_source": dict(self.documents_by_source),
            "failures_by_reason": dict(self.failures_by_reason),
            "pages_fetched": self.pages_fetched,
            "bytes_fetched": self.bytes_fetched,
            "doc_bytes": self.doc_bytes,
            "frontier_left": self.frontier_left,
            "resumes": self.resumes,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "rows": sum(self.documents_by_source.values()),
            "failures": sum(self.failures_by_reason.values()),
            **self._tally(),
            "doc_shards": len(shard_paths(self.folder / DOCS_DIR)),
            "failure_shards": len(shard_paths(self.folder / FAILURES_DIR)),
        }


def _discard_after(folder: Path, first_stale: int) -> None:
    """Remove shards numbered `first_stale` and up: written after the last checkpoint."""
    for path in shard_paths(folder):
        try:
            index = int(path.name.removesuffix(SUFFIX).rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if index >= first_stale:
            path.unlink()


# ----------------------------------------------------------------------------- the sources, in order


def _run_async(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """asyncio.run, also from code that already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    with ThreadPoolExecutor(1, thread_name_prefix="lmforge-crawl") as pool:
        pool.submit(lambda: asyncio.run(make())).result()


class _CrawlRun:
    def __init__(self, cfg: CrawlConfig, out: CrawlOutput, progress: Progress):
        self.cfg, self.out, self.progress = cfg, out, progress
        self._web_started = False

    def plan(self) -> list[str]:
        cfg = self.cfg
        return [
            *(f"files[{i}]" for i in range(len(cfg.files))),
            *(f"warc[{i}]" for i in range(len(cfg.warc))),
            *(f"hf_dataset[{i}]" for i in range(len(cfg.hf_dataset))),
            *(["urls"] if cfg.urls else []),
            *(["pydoc"] if cfg.pydoc else []),
        ]

    def run(self) -> None:
        plan = self.plan()
        if any(not s.startswith(("urls", "pydoc")) for s in plan):
            self.progress.start(None, "documents")
        for source_id in plan:
            if source_id in self.out.done:
                continue
            resume = self.out.current if self.out.current and self.out.current.get("id") == source_id else None
            if source_id in ("urls", "pydoc"):
                self._web(source_id, resume)
            else:
                self._local(source_id, resume)
            self.out.source_done(source_id)

    # ------------------------------------------------------------------ local sources

    def _rows(self, source_id: str) -> Iterator[Row]:
        cfg = self.cfg
        kind, index = source_id.rstrip("]").split("[")
        i = int(index)
        if kind == "files":
            return file_rows(cfg.files[i], cfg)
        if kind == "warc":
            return warc_rows(cfg.warc[i], cfg)
        return hf_rows(cfg.hf_dataset[i], source_id, cfg.max_bytes)

    def _local(self, source_id: str, resume: dict | None) -> None:
        position = resume.get("position", 0) if resume else 0  # rows already stored
        self.out.position = lambda: {"id": source_id, "position": position}
        for item in itertools.islice(self._rows(source_id), position, None):
            self.out.emit(item)
            position += 1
            if isinstance(item, rows.Doc):
                self.progress.advance()
            self.out.commit()

    # ------------------------------------------------------------------ web sources

    def _start_pages(self) -> int:
        """Pages still allowed by max_pages; starts the pages progress the first time."""
        if not self._web_started:
            self._web_started = True
            self.progress.start(self.cfg.max_pages, "pages")
            if self.out.pages_fetched:
                self.progress.advance(self.out.pages_fetched)
        return max(0, self.cfg.max_pages - self.out.pages_fetched)

    def _web(self, source_id: str, resume: dict | None) -> None:
        cfg = self.cfg
        if source_id == "urls":
            scope = Scope.build(cfg.urls, cfg.allow_hosts, cfg.allow_prefixes, cfg.exclude)
            self._crawl_web("urls", cfg.urls, scope, self._guard(), None, resume)
            return
        with pydoc_site.pydoc_server() as base:
            scope = Scope.build([base], allow_prefixes=[base], exclude=[*pydoc_site.DEFAULT_EXCLUDES, *cfg.exclude])
            guard = self._guard(trusted=[urlsplit(base).netloc])  # this server only, not where it links or redirects
            alias = UrlAlias(real=base, public=pydoc_site.PUBLIC_BASE)
            self._crawl_web("pydoc", [base], scope, guard, alias, resume)

    def _guard(self, trusted: Iterable[str] = ()) -> AddressGuard:
        cfg = self.cfg
        return AddressGuard(
            allow_loopback=cfg.allow_loopback,
            allow_private=cfg.allow_private,
            allow_link_local=cfg.allow_link_local,
            trusted=trusted,
        )

    def _crawl_web(
        self,
        source: str,
        seeds: list[str],
        scope: Scope,
        guard: AddressGuard,
        alias: UrlAlias | None,
        resume: dict | None,
    ) -> None:
        crawler = WebCrawler(
            self.cfg,
            source=source,
            seeds=seeds,
            scope=scope,
            guard=guard,
            sink=self.out,
            page_budget=self._start_pages(),
            state=resume.get("frontier") if resume else None,
            alias=alias,
        )
        self.out.position = lambda: {"id": source, "frontier": crawler.snapshot()}
        _run_async(crawler.run)
        self.out.frontier_left += crawler.frontier_left
