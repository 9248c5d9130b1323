"""The clean stage: crawl/<fp>/docs -> clean/<fp>/{docs,rejected}.

The crawl's documents are read in URL order (then source; documents with the same URL and
source keep their crawl order), in jobs of `clean.docs_per_shard`. The order pages arrived in and the
crawl's shard size therefore change nothing: the output follows from the documents alone, which
is what lets the stage's fingerprint take the crawl's content digest (see `fingerprint.py`).

Three phases, so that the expensive work runs one task per job and only small fingerprints
meet in one place:

1. filter (map, one task per job): every document goes through `clean_document`; the
   survivors are written to a candidates part (texts) and a signatures part (id, digest,
   MinHash), the others to a rejected part.
2. dedup (reduce, here): the signatures parts are read in job order, then row order, and
   `Deduplicator` marks later copies of a kept document. Texts are never loaded.
3. write (map again): each job's candidates minus its duplicates become `docs/part-i.arrow`;
   its rejects plus its duplicates, in URL order, `rejected/part-i.arrow`.

Every input document ends up in exactly one of docs/ or rejected/. Intermediate files live in
the build's partial folder and are removed before it is published. Memory is bounded by one
job per worker plus, here, the URLs of the crawl (to order them) and, in phase 2, the
fingerprints of the kept documents (a few KB each).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lm_core.clean.dedup import DIGEST_BYTES, Deduplicator
from lm_core.clean.fingerprint import STAGE, clean_fingerprint, clean_inputs
from lm_core.clean.pipeline import Dropped, Kept, clean_document
from lm_core.config import CleanConfig
from lm_core.progress import MapShards, NullProgress, Progress, serial_map
from lm_core.schemas import CLEAN_DOC, RAW_DOC, REJECTED
from lm_core.shards import read_shard, shard_name, shard_paths, write_shard
from lm_core.workspace import ArtifactRef, Workspace

_WORK = "_work"  # intermediates, inside the partial folder
_READ_ROWS = 64  # raw documents materialised as Python objects at a time
_COLUMNS = ["url", "source", "content_type", "declared_encoding", "detected_encoding", "body"]


class CleanError(ValueError):
    """The clean stage cannot run on this input (the message says why)."""


# ------------------------------------------------------------------ intermediate schemas


_CANDIDATE_SCHEMA = pa.schema([pa.field("row", pa.int32(), nullable=False), *CLEAN_DOC])


def _signature_schema(num_perm: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("row", pa.int32(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("digest", pa.binary(DIGEST_BYTES), nullable=False),
            pa.field("minhash", pa.list_(pa.uint64(), num_perm)),  # null when near-dedup is off
        ]
    )


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


# ------------------------------------------------------------------ phase 1: filter (map)


@dataclass(frozen=True)
class FilterJob:
    index: int
    raw_paths: tuple[str, ...]  # the crawl shards this job reads from
    picks: np.ndarray  # (k, 2): index into raw_paths and row of each document, in URL order
    work_dir: str
    cfg: CleanConfig


@dataclass
class FilterSummary:
    index: int
    documents: int = 0
    kept: int = 0
    bytes_in: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pii_replacements: dict[str, int] = field(default_factory=dict)


def document_order(raw_paths: list[Path]) -> np.ndarray:
    """Every document of the crawl as (shard, row), sorted by URL, then source, then position."""
    keys = []
    for shard, path in enumerate(raw_paths):
        table = read_shard(path, RAW_DOC)
        n = table.num_rows
        keys.append(
            pa.table(
                {
                    "url": table.column("url"),
                    "source": table.column("source"),
                    "shard": pa.array(np.full(n, shard, dtype=np.int32)),
                    "row": pa.array(np.arange(n, dtype=np.int32)),
                }
            )
        )
    ordered = pa.concat_tables(keys).sort_by([(k, "ascending") for k in ("url", "source", "shard", "row")])
    return np.stack([ordered.column("shard").to_numpy(), ordered.column("row").to_numpy()], axis=1)


def filter_jobs(raw_paths: list[Path], work_dir: Path, cfg: CleanConfig) -> list[FilterJob]:
    """The crawl's documents in URL order, `cfg.docs_per_shard` to a job."""
    order = document_order(raw_paths)
    jobs = []
    for index, start in enumerate(range(0, len(order), cfg.docs_per_shard)):
        picks = order[start : start + cfg.docs_per_shard]
        shards, local = np.unique(picks[:, 0], return_inverse=True)
        jobs.append(
            FilterJob(
                index=index,
                raw_paths=tuple(str(raw_paths[i]) for i in shards),
                picks=np.stack([local.astype(np.int32), picks[:, 1]], axis=1),
                work_dir=str(work_dir),
                cfg=cfg,
            )
        )
    return jobs


def _job_documents(job: FilterJob) -> pa.Table:
    """The job's documents (the columns cleaning reads), in its order."""
    pieces, positions = [], []
    for local, path in enumerate(job.raw_paths):
        mine = np.flatnonzero(job.picks[:, 0] == local)
        stat = os.stat(path)
        pieces.append(_mapped_shard(path, stat.st_mtime_ns, stat.st_size).take(pa.array(job.picks[mine, 1])))
        positions.append(mine)
    return pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))


@functools.lru_cache(maxsize=1024)
def _mapped_shard(path: str, mtime_ns: int, size: int) -> pa.Table:
    """A crawl shard, memory-mapped once per worker process: in URL order, every job reads a
    few documents from most shards, and opening one costs more than taking its rows. Keyed by
    mtime and size too, so that a shard rewritten in place (a forced re-crawl) is read anew."""
    return read_shard(path, RAW_DOC).select(_COLUMNS)


def filter_shard(job: FilterJob) -> FilterSummary:
    """Phase 1 for one job; writes its candidates, signatures and rejects."""
    table = _job_documents(job)
    summary = FilterSummary(job.index)
    reasons: Counter = Counter()
    pii: Counter = Counter()
    candidates: list[dict] = []
    signatures: list[dict] = []
    rejects: list[dict] = []

    row = 0
    for batch in table.to_batches(max_chunksize=_READ_ROWS):
        for doc in batch.to_pylist():
            outcome = clean_document(
                doc["body"], doc["content_type"], doc["declared_encoding"], doc["detected_encoding"], job.cfg
            )
            summary.bytes_in += len(doc["body"])
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
                signatures.append(
                    {
                        "row": row,
                        "id": outcome.id,
                        "digest": outcome.digest,
                        "minhash": None if outcome.signature is None else outcome.signature.tolist(),
                    }
                )
                pii.update(outcome.pii)
            else:
                assert isinstance(outcome, Dropped)
                rejects.append({**where, "reason": outcome.reason, "detail": outcome.detail, "text": outcome.text})
                reasons[outcome.reason] += 1
            row += 1

    write_shard(_work_path(job.work_dir, "cand", job.index), pa.Table.from_pylist(candidates, _CANDIDATE_SCHEMA))
    sig_schema = _signature_schema(job.cfg.dedup.num_perm)
    write_shard(_work_path(job.work_dir, "sig", job.index), pa.Table.from_pylist(signatures, sig_schema))
    write_shard(_work_path(job.work_dir, "rej", job.index), pa.Table.from_pylist(rejects, _REJECT_SCHEMA))
    summary.documents = row
    summary.kept = len(candidates)
    summary.rejected_by_reason = dict(reasons)
    summary.pii_replacements = dict(pii)
    return summary


# ------------------------------------------------------------------ phase 2: dedup (reduce)


def _signature_matrix(column: pa.ChunkedArray, num_perm: int) -> np.ndarray | None:
    """One row of uint64 MinHash values per document, or None when near-dedup is off."""
    if len(column) == 0 or column.null_count:
        return None
    values = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
    return values.flatten().to_numpy().reshape(-1, num_perm)


def find_duplicates(n_jobs: int, work_dir: str, cfg: CleanConfig) -> Counter:
    """Phase 2: walk every job's signatures in order; write each job's duplicates."""
    dedup = Deduplicator(cfg.dedup)
    found: Counter = Counter()
    for index in range(n_jobs):
        sigs = read_shard(_work_path(work_dir, "sig", index))
        duplicates = []
        rows = sigs.column("row").to_pylist()
        ids = sigs.column("id").to_pylist()
        digests = sigs.column("digest").to_pylist()
        signatures = _signature_matrix(sigs.column("minhash"), cfg.dedup.num_perm)
        for i, (row, doc_id, digest) in enumerate(zip(rows, ids, digests, strict=True)):
            signature = signatures[i] if signatures is not None else None
            duplicate = dedup.check(doc_id, digest, signature)
            if duplicate is not None:
                duplicates.append({"row": row, "reason": duplicate.reason, "detail": duplicate.of})
                found[duplicate.reason] += 1
        write_shard(_work_path(work_dir, "dup", index), pa.Table.from_pylist(duplicates, _DUPLICATE_SCHEMA))
    return found


# ------------------------------------------------------------------ phase 3: write (map)


@dataclass(frozen=True)
class WriteJob:
    index: int
    work_dir: str
    out_dir: str


@dataclass
class WriteSummary:
    kept: int
    words: int
    bytes: int


def write_outputs(job: WriteJob) -> WriteSummary:
    """Phase 3 for one job: final docs part and rejected part (skipped when empty)."""
    candidates = read_shard(_work_path(job.work_dir, "cand", job.index))
    duplicates = read_shard(_work_path(job.work_dir, "dup", job.index))
    rejects = read_shard(_work_path(job.work_dir, "rej", job.index))

    is_duplicate = pc.is_in(candidates.column("row"), value_set=duplicates.column("row"))
    docs = candidates.filter(pc.invert(is_duplicate)).select(CLEAN_DOC.names).cast(CLEAN_DOC)
    dropped = candidates.filter(is_duplicate).select(["row", "url", "source", "text"])
    dropped = dropped.join(duplicates, "row").select(_REJECT_SCHEMA.names).cast(_REJECT_SCHEMA)
    rejected = pa.concat_tables([rejects, dropped]).sort_by("row").select(REJECTED.names).cast(REJECTED)

    # one contiguous chunk each, so the bytes written do not depend on how joins chunked them
    docs, rejected = docs.combine_chunks(), rejected.combine_chunks()
    out = Path(job.out_dir)
    name = shard_name(job.index)
    if docs.num_rows:
        write_shard(out / "docs" / name, docs)
    if rejected.num_rows:
        write_shard(out / "rejected" / name, rejected)
    return WriteSummary(
        kept=docs.num_rows,
        words=int(pc.sum(docs.column("n_words")).as_py() or 0),
        bytes=int(pc.sum(docs.column("n_bytes")).as_py() or 0),
    )


# ------------------------------------------------------------------ the stage


def _merge(counters: list[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return dict(sorted(total.items()))


def run_clean(
    cfg: CleanConfig,
    crawl: ArtifactRef,
    ws: Workspace,
    map_shards: MapShards = serial_map,
    progress: Progress = NullProgress(),
) -> ArtifactRef:
    """Clean a crawl artifact into `clean/<fingerprint>/`; returns the published artifact
    (at once, without work, if it exists already)."""
    fp = clean_fingerprint(cfg, crawl)
    with ws.build(STAGE, fp, config=cfg.fingerprint_fields(), inputs=clean_inputs(crawl)) as build:
        if build.published:
            return build.ref
        raw_paths = shard_paths(crawl.dir / "docs")
        if not raw_paths:
            raise CleanError(f"crawl artifact {crawl.dir} holds no document shards (docs/part-*.arrow)")
        work_dir = build.dir / _WORK
        work_dir.mkdir()
        seconds = {}

        started = time.perf_counter()
        jobs = filter_jobs(raw_paths, work_dir, cfg)
        n = len(jobs)
        progress.start(n, "shards")
        filtered = map_shards(filter_shard, jobs, progress)
        seconds["filter"] = time.perf_counter() - started

        started = time.perf_counter()
        duplicates = find_duplicates(n, str(work_dir), cfg)
        seconds["dedup"] = time.perf_counter() - started

        started = time.perf_counter()
        progress.start(n, "shards")
        written = map_shards(write_outputs, [WriteJob(i, str(work_dir), str(build.dir)) for i in range(n)], progress)
        shutil.rmtree(work_dir)
        seconds["write"] = time.perf_counter() - started

        documents_in = sum(s.documents for s in filtered)
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
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    return build.ref
