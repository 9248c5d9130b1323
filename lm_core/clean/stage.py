"""The clean stage: crawl/<fp>/docs -> clean/<fp>/{docs,rejected,outcomes}.

The crawl's documents are read in URL order (then source; documents with the same URL and
source keep their crawl order), and output shard i holds what became of the i-th run of
`clean.docs_per_shard` documents in that order. The order pages arrived in, the crawl's shard
size and how the work is split and scheduled therefore change nothing: the output follows from
the documents alone, which is what lets the stage's fingerprint take the crawl's content digest
(see `fingerprint.py`).

Three phases, so that the expensive work runs one task per job and only small fingerprints
meet in one place:

1. filter (map, one task per job): every document goes through `clean_document`, unless its
   outcome can be reused (below); the survivors' texts are written to a candidates part, every
   document's outcome (reason, digest, MinHash, ...) to an outcomes part, the rejects to a
   rejected part. A job never spans two output shards and holds at most `clean.bytes_per_job`
   bytes to clean (a bigger page is a job of its own); the biggest jobs start first, so that
   one big page does not hold the stage while the other workers idle.
2. dedup (reduce, here): the outcomes of kept documents are read in URL order, and
   `Deduplicator` marks later copies of a kept document. Texts are never loaded.
3. write (map again, one task per output shard): its candidates minus its duplicates become
   `docs/part-i.arrow`; its rejects plus its duplicates, in URL order, `rejected/part-i.arrow`;
   its outcomes, with where each text now lies, `outcomes/part-i.<sha256>.arrow`.

Incremental rebuilds. A document's outcome is keyed by a hash of what `clean_document` reads
(body, content type, declared and detected encodings). A build looks its documents' keys up in
the outcomes of the newest earlier clean artifacts made with the same decisive config and
CODE_VERSION (`made_with`), and reuses what it finds instead of cleaning again: after a refresh
in which one page changed, one page is cleaned. Outcomes hold no text: it is read back from the
earlier artifact's docs/ or rejected/ and checked against its hash (the document id). Each
outcomes file is named by its SHA-256, checked before use: a file that is gone (its artifact was
removed), truncated or corrupt is ignored and its documents are cleaned again. Dedup and write
always run in full, so the artifact is the same bytes as a build from scratch.

Every input document ends up in exactly one of docs/ or rejected/. Intermediate files live in
the build's partial folder and are removed before it is published. Memory is bounded by one
job per worker plus, here, the URLs and content keys of the crawl (to order and look them up)
and, in phase 2, the fingerprints of the kept documents (about 130 bytes each with their ids,
plus the signature of each that shares an LSH bucket with another). Crawl shards are
memory-mapped only while they are read (a mapping kept open keeps every page read through it
resident), so neither this process nor a long-lived worker comes to hold the crawl. After each
job a worker hands the heap pages it freed back to the system (`_return_freed_memory`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lm_core.clean.dedup import DIGEST_BYTES, Deduplicator
from lm_core.clean.fingerprint import STAGE, key_of, made_with
from lm_core.clean.pipeline import Dropped, Kept, clean_document, document_id
from lm_core.config import CleanConfig
from lm_core.progress import MapShards, NullProgress, Progress, serial_map
from lm_core.schemas import CLEAN_DOC, RAW_DOC, REJECTED
from lm_core.shards import CorruptShardError, read_shard, shard_name, shard_paths, write_shard
from lm_core.workspace import ArtifactRef, StageKey, Workspace

if TYPE_CHECKING:
    from lm_core.config import Config
    from lm_core.stages import Inputs, StageRun

log = logging.getLogger(__name__)

_WORK = "_work"  # intermediates, inside the partial folder
OUTCOMES = "outcomes"  # published: each document's phase-1 outcome, for later builds to reuse
_READ_ROWS = 64  # raw documents materialised as Python objects at a time
_COLUMNS = ["url", "source", "content_type", "declared_encoding", "detected_encoding", "body"]
_KEYED = ("body", "content_type", "declared_encoding", "detected_encoding")  # what clean_document reads
KEY_BYTES = 16
_REUSE_FROM = 3  # earlier artifacts searched for outcomes, newest first
_OUTCOMES_FILE = re.compile(r"part-(\d+)\.([0-9a-f]{32})\.arrow")  # the shard, the file's SHA-256
_TEXT_PARTS = ("docs", "rejected")


# glibc's allocator, from the symbols the process has loaded already (no library search at
# import); None elsewhere (macOS, musl), where _return_freed_memory does nothing
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if os.name == "posix" else None


def _return_freed_memory() -> None:
    """Give the free pages of the heap back to the system (glibc's malloc_trim). A page's parse
    trees are freed in many small pieces that glibc keeps for reuse, so that a long-lived worker's
    resident memory creeps up job after job (its peak from 381 to 415 MB over 80 jobs of the
    1 GB bench corpus; with this it stays at 381) and, between jobs, holds what its largest job
    needed (410 MB, against 260 with this) while the other worker peaks."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class CleanError(ValueError):
    """The clean stage cannot run on this input (the message says why)."""


# ------------------------------------------------------------------ intermediate schemas


_CANDIDATE_SCHEMA = pa.schema([pa.field("row", pa.int32(), nullable=False), *CLEAN_DOC])


def _outcome_fields(num_perm: int) -> list[pa.Field]:
    return [
        pa.field("key", pa.binary(KEY_BYTES), nullable=False),  # `content_key` of the document
        pa.field("reason", pa.string()),  # null: kept by phase 1 (dedup may still drop it)
        pa.field("detail", pa.string()),
        pa.field("text_id", pa.string()),  # document_id of its text (null: none), checked on reuse
        pa.field("language", pa.string()),
        pa.field("n_words", pa.int32()),
        pa.field("n_bytes", pa.int64()),
        pa.field("digest", pa.binary(DIGEST_BYTES)),
        pa.field("minhash", pa.list_(pa.uint64(), num_perm)),  # null when near-dedup is off
        pa.field("pii", pa.string()),  # replacements made, as JSON
    ]


def _outcome_work_schema(num_perm: int) -> pa.Schema:
    return pa.schema([pa.field("row", pa.int32(), nullable=False), *_outcome_fields(num_perm)])


def outcome_schema(num_perm: int) -> pa.Schema:
    """outcomes/part-i.<sha256>.arrow: one row per input document of output shard i, in its order.
    The text is not stored again: it lies in this artifact's `text_in`/part-i.arrow, row
    `text_row` (both null if the document had no text)."""
    return pa.schema([*_outcome_fields(num_perm), pa.field("text_in", pa.string()), pa.field("text_row", pa.int32())])


_REJECT_SCHEMA = pa.schema([pa.field("row", pa.int32(), nullable=False), *REJECTED])
_DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int32(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


def _work_path(work_dir: str | Path, kind: str, index: int) -> Path:
    return Path(work_dir) / shard_name(index, kind)


# ------------------------------------------------------------------ the crawl, and reuse


def content_key(body: bytes, content_type: str | None, declared: str | None, detected: str | None) -> bytes:
    """What `clean_document` reads, hashed: for one config and code version, one key, one outcome."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for value in (body, content_type, declared, detected):  # length-prefixed: no field passes for the next
        data = b"" if value is None else value if isinstance(value, bytes) else value.encode()
        h.update((-1 if value is None else len(data)).to_bytes(8, "little", signed=True) + data)
    return h.digest()


@dataclass
class Crawled:
    """The crawl's documents sorted by URL, then source, then position."""

    paths: list[Path]
    at: np.ndarray  # (n, 2): shard and row of each document
    keys: list[bytes]  # its content key
    sizes: np.ndarray  # its body's bytes


def read_crawl(raw_paths: list[Path]) -> Crawled:
    """Where each document lies, in URL order, its content key and its size (bodies are read a
    batch at a time, to hash them)."""
    tables, keys = [], []
    for shard, path in enumerate(raw_paths):
        table = read_shard(path, RAW_DOC)
        n = table.num_rows
        every = pa.array(np.arange(n, dtype=np.int32))
        tables.append(
            pa.table(
                {
                    # copies (take), not views of the mapped shard: a mapping kept alive keeps
                    # the bodies read through it in this process's memory, the whole crawl by the end
                    "url": table.column("url").take(every),
                    "source": table.column("source").take(every),
                    "shard": pa.array(np.full(n, shard, dtype=np.int32)),
                    "row": pa.array(np.arange(n, dtype=np.int32)),
                    "size": pc.binary_length(table.column("body")),
                }
            )
        )
        batches = table.select(list(_KEYED)).to_batches(max_chunksize=_READ_ROWS)
        keys.append([content_key(*(doc[c] for c in _KEYED)) for batch in batches for doc in batch.to_pylist()])
    ordered = pa.concat_tables(tables).sort_by([(k, "ascending") for k in ("url", "source", "shard", "row")])
    shards, rows = ordered.column("shard").to_numpy(), ordered.column("row").to_numpy()
    return Crawled(
        paths=raw_paths,
        at=np.stack([shards, rows], axis=1),
        keys=[keys[s][r] for s, r in zip(shards.tolist(), rows.tolist(), strict=True)],
        sizes=ordered.column("size").to_numpy().astype(np.int64),
    )


def reusable_outcomes(ws: Workspace, cfg: CleanConfig, building: str) -> list[Path]:
    """The outcomes files of the newest earlier clean artifacts made with this config and code
    version (performance-only settings aside), newest first."""
    earlier = [
        Path(a["path"])
        for a in ws.artifacts(STAGE)  # newest first
        if a["fingerprint"] != building and made_with(cfg, a["manifest"], a["fingerprint"])
    ]
    return [path for folder in earlier[:_REUSE_FROM] for path in shard_paths(folder / OUTCOMES)]


def find_outcomes(keys: list[bytes], files: list[Path]) -> dict[bytes, tuple[str, int]]:
    """Where an earlier outcome of each key lies (outcomes file, row), first file first. A file
    whose content is not its name's SHA-256 (truncated, damaged) or that is gone is skipped: its
    documents are cleaned again."""
    wanted, found = set(keys), {}
    for path in files:
        if len(found) == len(wanted):
            break
        try:
            named = _OUTCOMES_FILE.fullmatch(path.name)
            if named is None or hashlib.sha256(path.read_bytes()).hexdigest()[:32] != named[2]:
                raise CorruptShardError(f"{path} does not match its SHA-256")
            column = read_shard(path).column("key").to_pylist()
        except (OSError, CorruptShardError, KeyError) as e:
            log.warning("not reusing clean outcomes from %s: %s", path, e)
            continue
        for row, key in enumerate(column):
            if key in wanted and key not in found:
                found[key] = (str(path), row)
    return found


# ------------------------------------------------------------------ phase 1: filter (map)


@dataclass(frozen=True)
class FilterJob:
    index: int  # jobs are numbered in URL order
    shard: int  # the output shard its documents go to
    first_row: int  # the row of its first document in that shard
    raw_paths: tuple[str, ...]  # the crawl shards this job reads from
    picks: np.ndarray  # (k, 2): index into raw_paths and row of each document, in URL order
    keys: tuple[bytes, ...]  # the content key of each document
    reuse: tuple[tuple[str, int] | None, ...]  # where each one's earlier outcome lies (None: clean it)
    weight: int  # raw bytes to clean
    work_dir: str
    cfg: CleanConfig


@dataclass
class FilterSummary:
    index: int
    documents: int = 0
    kept: int = 0
    reused: int = 0
    bytes_in: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pii_replacements: dict[str, int] = field(default_factory=dict)


def filter_jobs(
    crawl: Crawled, found: dict[bytes, tuple[str, int]], work_dir: Path, cfg: CleanConfig
) -> list[FilterJob]:
    """Output shard by output shard, its documents cut into jobs of at most `cfg.bytes_per_job`
    bytes to clean (a reused document weighs nothing; a bigger one is a job of its own)."""
    reuse = [found.get(key) for key in crawl.keys]
    weights = [0 if r is not None else int(size) for r, size in zip(reuse, crawl.sizes, strict=True)]
    jobs: list[FilterJob] = []

    def add(shard: int, start: int, first: int, stop: int) -> None:
        picks = crawl.at[first:stop]
        shards, local = np.unique(picks[:, 0], return_inverse=True)
        jobs.append(
            FilterJob(
                index=len(jobs),
                shard=shard,
                first_row=first - start,
                raw_paths=tuple(str(crawl.paths[i]) for i in shards),
                picks=np.stack([local.astype(np.int32), picks[:, 1]], axis=1),
                keys=tuple(crawl.keys[first:stop]),
                reuse=tuple(reuse[first:stop]),
                weight=sum(weights[first:stop]),
                work_dir=str(work_dir),
                cfg=cfg,
            )
        )

    for shard, start in enumerate(range(0, len(crawl.keys), cfg.docs_per_shard)):
        stop = min(start + cfg.docs_per_shard, len(crawl.keys))
        first, total = start, 0
        for i in range(start, stop):
            if i > first and total + weights[i] > cfg.bytes_per_job:
                add(shard, start, first, i)
                first, total = i, 0
            total += weights[i]
        add(shard, start, first, stop)
    return jobs


def _job_documents(job: FilterJob) -> pa.Table:
    """The job's documents (the columns cleaning reads), in its order: copied out of the crawl's
    shards (take copies), which are mapped for the job only. Opening a shard costs under a
    millisecond; a mapping kept open would keep every body read through it in this worker's
    memory (its resident pages), so that a long-lived worker would end up holding the crawl."""
    pieces, positions = [], []
    for local, path in enumerate(job.raw_paths):
        mine = np.flatnonzero(job.picks[:, 0] == local)
        pieces.append(read_shard(path, RAW_DOC).select(_COLUMNS).take(pa.array(job.picks[mine, 1])))
        positions.append(mine)
    return pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))


@functools.lru_cache(maxsize=16)
def _mapped_output(path: str, mtime_ns: int, size: int) -> pa.Table:
    """A shard of an earlier clean artifact (outcomes, docs, rejected), memory-mapped once per
    worker process: a job reuses outcomes of the same output shard, so a few are enough (each
    one kept mapped holds the pages read through it). Keyed by mtime and size too, so that a
    file rewritten in place is read anew."""
    return read_shard(path)


def _read_output(path: Path) -> pa.Table:
    stat = os.stat(path)
    return _mapped_output(str(path), stat.st_mtime_ns, stat.st_size)


def reused_outcome(where: tuple[str, int], key: bytes) -> Kept | Dropped | None:
    """A document's outcome read back from an earlier artifact, or None when what is found there
    fails a check (its artifact removed since the lookup, a text that is not the one hashed)."""
    path, row = Path(where[0]), where[1]
    try:
        rec = _read_output(path).slice(row, 1).to_pylist()[0]
        if rec["key"] != key:
            return None
        text = None
        if rec["text_in"] in _TEXT_PARTS:  # the same shard of this artifact's docs/ or rejected/
            part = path.parent.parent / rec["text_in"] / shard_name(int(_OUTCOMES_FILE.fullmatch(path.name)[1]))
            text = _read_output(part).column("text")[rec["text_row"]].as_py()
        # the text read back must be the one hashed (and a kept document has one)
        if (None if text is None else document_id(text)) != rec["text_id"] or (rec["reason"], text) == (None, None):
            return None
        if rec["reason"] is not None:
            return Dropped(rec["reason"], rec["detail"], text)
        minhash = rec["minhash"]
        return Kept(
            id=rec["text_id"],
            text=text,
            language=rec["language"],
            n_words=rec["n_words"],
            n_bytes=rec["n_bytes"],
            digest=rec["digest"],
            signature=None if minhash is None else np.array(minhash, dtype=np.uint64),
            pii=Counter(json.loads(rec["pii"])),
        )
    except (OSError, CorruptShardError, pa.ArrowException, IndexError, KeyError, TypeError, ValueError) as e:
        log.warning("cleaning a document again: its outcome in %s is unusable (%s)", path, e)
        return None


def filter_shard(job: FilterJob) -> FilterSummary:
    """Phase 1 for one job; writes its candidates, outcomes and rejects."""
    table = _job_documents(job)
    summary = FilterSummary(job.index)
    reasons: Counter = Counter()
    pii: Counter = Counter()
    candidates: list[dict] = []
    outcomes: list[dict] = []
    rejects: list[dict] = []

    i = 0
    for batch in table.to_batches(max_chunksize=_READ_ROWS):
        for doc in batch.to_pylist():
            outcome = reused_outcome(job.reuse[i], job.keys[i]) if job.reuse[i] is not None else None
            if outcome is not None:
                summary.reused += 1
            else:
                outcome = clean_document(
                    doc["body"], doc["content_type"], doc["declared_encoding"], doc["detected_encoding"], job.cfg
                )
            summary.bytes_in += len(doc["body"])
            row = job.first_row + i
            where = {"row": row, "url": doc["url"], "source": doc["source"]}
            if isinstance(outcome, Kept):
                candidates.append(
                    {
                        **where,
                        "id": outcome.id,
                        "text": outcome.text,
                        "language": outcome.language,
                        "n_words": outcome.n_words,
                        "n_bytes": outcome.n_bytes,
                    }
                )
                outcomes.append(
                    {
                        "row": row,
                        "key": job.keys[i],
                        "text_id": outcome.id,
                        "language": outcome.language,
                        "n_words": outcome.n_words,
                        "n_bytes": outcome.n_bytes,
                        "digest": outcome.digest,
                        "minhash": None if outcome.signature is None else outcome.signature.tolist(),
                        "pii": json.dumps(dict(outcome.pii), sort_keys=True),
                    }
                )
                pii.update(outcome.pii)
            else:
                assert isinstance(outcome, Dropped)
                rejects.append({**where, "reason": outcome.reason, "detail": outcome.detail, "text": outcome.text})
                outcomes.append(
                    {
                        "row": row,
                        "key": job.keys[i],
                        "reason": outcome.reason,
                        "detail": outcome.detail,
                        "text_id": None if outcome.text is None else document_id(outcome.text),
                    }
                )
                reasons[outcome.reason] += 1
            i += 1

    write_shard(_work_path(job.work_dir, "cand", job.index), pa.Table.from_pylist(candidates, _CANDIDATE_SCHEMA))
    out_schema = _outcome_work_schema(job.cfg.dedup.num_perm)
    write_shard(_work_path(job.work_dir, "out", job.index), pa.Table.from_pylist(outcomes, out_schema))
    write_shard(_work_path(job.work_dir, "rej", job.index), pa.Table.from_pylist(rejects, _REJECT_SCHEMA))
    summary.documents = i
    summary.kept = len(candidates)
    summary.rejected_by_reason = dict(reasons)
    summary.pii_replacements = dict(pii)
    del table, candidates, outcomes, rejects  # freed before the heap is trimmed
    _return_freed_memory()
    return summary


# ------------------------------------------------------------------ phase 2: dedup (reduce)


def _signature_matrix(column: pa.ChunkedArray, num_perm: int) -> np.ndarray | None:
    """One row of uint64 MinHash values per document, or None when near-dedup is off."""
    if column.null_count:
        return None
    if len(column) == 0:
        return np.zeros((0, num_perm), dtype=np.uint64)
    values = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
    return values.flatten().to_numpy().reshape(-1, num_perm)


def _kept_outcomes(work_dir: str, index: int) -> pa.Table:
    outcomes = read_shard(_work_path(work_dir, "out", index))
    return outcomes.filter(pc.is_null(outcomes.column("reason")))


def find_duplicates(n_jobs: int, work_dir: str, cfg: CleanConfig) -> Counter:
    """Phase 2: walk the kept documents of every job in order; write each job's duplicates.
    Two reads of the jobs' outcomes: the first gives `Deduplicator` every document's digest and
    signature (it keeps their LSH band keys); the second reads back the signatures of the few
    documents that share a bucket with another, the only ones it compares."""
    dedup = Deduplicator(cfg.dedup)
    rows, ids = [], []  # per job, its kept documents' rows and text ids
    for index in range(n_jobs):
        kept = _kept_outcomes(work_dir, index)
        rows.append(kept.column("row").to_numpy())
        ids.append(np.array(kept.column("text_id").to_pylist(), dtype=np.bytes_))
        dedup.add(kept.column("digest").to_pylist(), _signature_matrix(kept.column("minhash"), cfg.dedup.num_perm))
    starts = np.cumsum([0] + [len(r) for r in rows])  # job j's documents are positions starts[j]..
    compared = dedup.compared()
    signatures: dict[int, np.ndarray] = {}
    for index in np.unique(np.searchsorted(starts, compared, side="right") - 1):
        mine = compared[(compared >= starts[index]) & (compared < starts[index + 1])]
        matrix = _signature_matrix(_kept_outcomes(work_dir, index).column("minhash"), cfg.dedup.num_perm)
        signatures.update(zip(mine.tolist(), matrix[mine - starts[index]], strict=True))
    dropped = dedup.duplicates(signatures.__getitem__)

    def text_id(position: int) -> str:
        index = int(np.searchsorted(starts, position, side="right")) - 1
        return ids[index][position - starts[index]].decode()

    found: Counter = Counter()
    for index in range(n_jobs):
        duplicates = []
        for position in range(starts[index], starts[index + 1]):
            duplicate = dropped.get(position)
            if duplicate is not None:
                row = int(rows[index][position - starts[index]])
                duplicates.append({"row": row, "reason": duplicate.reason, "detail": text_id(duplicate.of)})
                found[duplicate.reason] += 1
        write_shard(_work_path(work_dir, "dup", index), pa.Table.from_pylist(duplicates, _DUPLICATE_SCHEMA))
    return found


# ------------------------------------------------------------------ phase 3: write (map)


@dataclass(frozen=True)
class WriteJob:
    index: int  # the output shard
    jobs: tuple[int, ...]  # the filter jobs that hold its documents, in order
    work_dir: str
    out_dir: str
    num_perm: int


@dataclass
class WriteSummary:
    kept: int
    words: int
    bytes: int


def write_outputs(job: WriteJob) -> WriteSummary:
    """Phase 3 for one output shard: its docs part and rejected part (each skipped when empty),
    and its outcomes."""

    def parts(kind: str) -> pa.Table:
        return pa.concat_tables([read_shard(_work_path(job.work_dir, kind, j)) for j in job.jobs])

    candidates, duplicates, rejects = parts("cand"), parts("dup"), parts("rej")

    is_duplicate = pc.is_in(candidates.column("row"), value_set=duplicates.column("row"))
    kept = candidates.filter(pc.invert(is_duplicate))
    docs = kept.select(CLEAN_DOC.names).cast(CLEAN_DOC)
    dropped = candidates.filter(is_duplicate).select(["row", "url", "source", "text"])
    dropped = dropped.join(duplicates, "row").select(_REJECT_SCHEMA.names).cast(_REJECT_SCHEMA)
    all_rejected = pa.concat_tables([rejects, dropped]).sort_by("row")
    rejected = all_rejected.select(REJECTED.names).cast(REJECTED)

    # one contiguous chunk each, so the bytes written do not depend on how joins chunked them
    docs, rejected = docs.combine_chunks(), rejected.combine_chunks()
    out = Path(job.out_dir)
    name = shard_name(job.index)
    if docs.num_rows:
        write_shard(out / "docs" / name, docs)
    if rejected.num_rows:
        write_shard(out / "rejected" / name, rejected)
    _write_outcomes(job, parts("out"), kept.column("row"), all_rejected)
    return WriteSummary(
        kept=docs.num_rows,
        words=int(pc.sum(docs.column("n_words")).as_py() or 0),
        bytes=int(pc.sum(docs.column("n_bytes")).as_py() or 0),
    )


def _write_outcomes(job: WriteJob, outcomes: pa.Table, docs_rows: pa.ChunkedArray, rejected: pa.Table) -> None:
    """outcomes/part-i.<sha256>.arrow: the shard's outcomes in row order (its jobs cover rows
    0..n-1 in turn), each with where its text now lies; the name is what a later build checks
    before it trusts the file."""
    n = outcomes.num_rows
    part = np.full(n, -1, dtype=np.int8)  # index into _TEXT_PARTS
    at = np.zeros(n, dtype=np.int32)
    docs_rows = docs_rows.to_numpy()
    part[docs_rows], at[docs_rows] = 0, np.arange(len(docs_rows))
    with_text = np.flatnonzero(rejected.column("text").is_valid().to_numpy(zero_copy_only=False))
    rejected_rows = rejected.column("row").to_numpy()[with_text]
    part[rejected_rows], at[rejected_rows] = 1, with_text
    table = outcomes.drop_columns(["row"])
    table = table.append_column("text_in", pa.array([_TEXT_PARTS[p] if p >= 0 else None for p in part], pa.string()))
    table = table.append_column("text_row", pa.array(at, mask=part < 0))
    table = table.cast(outcome_schema(job.num_perm)).combine_chunks()
    folder = Path(job.out_dir) / OUTCOMES
    tmp = folder / f".{shard_name(job.index)}.tmp"
    write_shard(tmp, table)
    with open(tmp, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()[:32]
    os.replace(tmp, folder / f"part-{job.index:05d}.{sha}.arrow")


# ------------------------------------------------------------------ the stage


def _merge(counters: list[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return dict(sorted(total.items()))


def clean_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    """The declared run of the stage (lm_core/stages.py)."""
    return run_clean(cfg.clean, inputs["crawl"], ws, run.map_shards, run.progress, key=key)


def run_clean(
    cfg: CleanConfig,
    crawl: ArtifactRef,
    ws: Workspace,
    map_shards: MapShards = serial_map,
    progress: Progress = NullProgress(),
    key: StageKey | None = None,
) -> ArtifactRef:
    """Clean a crawl artifact into `clean/<fingerprint>/`; returns the published artifact
    (at once, without work, if it exists already). `key`: computed already (`clean_key`)."""
    key = key or key_of(cfg, crawl)
    fp = key.fingerprint
    with ws.build(STAGE, fp, config=key.config, inputs=key.inputs) as build:
        if build.published:
            return build.ref
        raw_paths = shard_paths(crawl.dir / "docs")
        if not raw_paths:
            raise CleanError(f"crawl artifact {crawl.dir} holds no document shards (docs/part-*.arrow)")
        work_dir = build.dir / _WORK
        work_dir.mkdir()
        seconds = {}

        started = time.perf_counter()
        crawled = read_crawl(raw_paths)
        found = find_outcomes(crawled.keys, reusable_outcomes(ws, cfg, fp))
        jobs = filter_jobs(crawled, found, work_dir, cfg)
        progress.start(len(jobs), "shards")
        # biggest first: a big page started last would hold the stage while the other workers idle
        biggest_first = sorted(jobs, key=lambda job: -job.weight)
        filtered = sorted(map_shards(filter_shard, biggest_first, progress), key=lambda s: s.index)
        seconds["filter"] = time.perf_counter() - started

        started = time.perf_counter()
        duplicates = find_duplicates(len(jobs), str(work_dir), cfg)
        seconds["dedup"] = time.perf_counter() - started

        started = time.perf_counter()
        n_shards = jobs[-1].shard + 1 if jobs else 0
        writes = [
            WriteJob(i, tuple(j.index for j in jobs if j.shard == i), str(work_dir), str(build.dir), cfg.dedup.num_perm)
            for i in range(n_shards)
        ]
        progress.start(n_shards, "shards")
        written = map_shards(write_outputs, writes, progress)
        shutil.rmtree(work_dir)
        seconds["write"] = time.perf_counter() - started

        documents_in = sum(s.documents for s in filtered)
        reused = sum(s.reused for s in filtered)
        kept = sum(w.kept for w in written)
        rejected_by_reason = _merge([s.rejected_by_reason for s in filtered] + [dict(duplicates)])
        if kept + sum(rejected_by_reason.values()) != documents_in:  # cannot happen; never publish if it does
            raise RuntimeError(f"clean lost documents: {documents_in} in, {kept} kept, {rejected_by_reason} rejected")
        build.stats = {
            "rows": kept,
            "documents_in": documents_in,
            "kept": kept,
            "rejected": documents_in - kept,
            "rejected_by_reason": rejected_by_reason,
            "pii_replacements": _merge([s.pii_replacements for s in filtered]),
            "words": sum(w.words for w in written),
            "bytes": sum(w.bytes for w in written),
            "bytes_in": sum(s.bytes_in for s in filtered),
            "shards_in": len(raw_paths),
            "jobs": len(jobs),
            "cleaned": documents_in - reused,  # through clean_document
            "reused": reused,  # outcomes read back from an earlier artifact
            "reused_from": sorted({Path(path).parent.parent.name for path, _ in found.values()}),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    return build.ref
