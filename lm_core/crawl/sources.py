"""The crawl's non-web sources: WARC files, local files, and Hugging Face datasets.

Each source is a generator of rows (`rows.Doc` or `rows.Failure`) in a fixed order, so a crawl
interrupted part-way resumes by skipping the rows it has already stored. A bad input (an
unreadable file, a malformed jsonl line or WARC record, a row without text) becomes a failure
row with its reason, never an exception. A source that cannot start at all (a missing folder
or WARC file, a dataset that will not load) is a configuration error: `CrawlInputError`, raised
before anything is published.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from lm_core.config import CrawlConfig, FilesSource, HFDatasetSource
from lm_core.crawl import reasons, rows
from lm_core.crawl.encoding import Encodings, media_type, sniff

Row = rows.Doc | rows.Failure

# media types of the files a `files` source reads; .jsonl files hold one document per line
FILE_TYPES = {".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml",
              ".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}  # fmt: skip
JSONL_SUFFIXES = (".jsonl",)
_TEXT_FROM_JSON = Encodings("utf-8", None)  # text taken from JSON or a dataset is stored UTF-8 encoded


class CrawlInputError(ValueError):
    """A source that cannot be read at all; the message names it."""


# ----------------------------------------------------------------------------- files


def match_files(src: FilesSource) -> list[Path]:
    """The paths a `files` source reads, sorted; raises `CrawlInputError` if its path is missing."""
    root = Path(src.path).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CrawlInputError(f"files source {src.path!r} does not exist")
    return sorted(p for p in root.glob(src.glob) if not p.is_dir())  # broken links stay: they are failures


def file_rows(src: FilesSource, cfg: CrawlConfig) -> Iterator[Row]:
    allowed = {t.lower() for t in cfg.content_types}
    for path in match_files(src):
        url = str(path.absolute())
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _jsonl_rows(path, url, src.text_field, cfg.max_bytes)
            continue
        media = FILE_TYPES.get(path.suffix.lower())
        if media is None or media not in allowed:
            yield rows.failure(
                url, "files", reasons.CONTENT_TYPE, f"{path.suffix or 'no extension'}: not a supported document type"
            )
            continue
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                yield rows.failure(url, "files", reasons.UNREADABLE, "not a regular file")
                continue
            if info.st_size > cfg.max_bytes:
                yield rows.failure(url, "files", reasons.TOO_LARGE, f"{info.st_size} bytes > max_bytes {cfg.max_bytes}")
                continue
            body = path.read_bytes()
        except OSError as e:
            yield rows.failure(url, "files", reasons.UNREADABLE, f"{type(e).__name__}: {e.strerror or e}")
            continue
        yield rows.doc(url, "files", body, content_type=media, encodings=sniff(body, None, media))


def _jsonl_rows(path: Path, url: str, text_field: str, max_bytes: int) -> Iterator[Row]:
    try:
        f = open(path, "rb")
    except OSError as e:
        yield rows.failure(url, "files", reasons.UNREADABLE, f"{type(e).__name__}: {e.strerror or e}")
        return
    with f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except OSError as e:
                yield rows.failure(f"{url}:{lineno + 1}", "files", reasons.UNREADABLE, f"{type(e).__name__}: {e}")
                return
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            yield _jsonl_record(line, f"{url}:{lineno}", text_field, max_bytes)


def _jsonl_record(line: bytes, url: str, text_field: str, max_bytes: int) -> Row:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        return rows.failure(url, "files", reasons.MALFORMED, f"not a JSON line: {e}")
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        return rows.failure(url, "files", reasons.MALFORMED, f"no string field {text_field!r}")
    body = text.encode("utf-8", errors="replace")  # a lone surrogate from JSON becomes "?"
    if len(body) > max_bytes:
        return rows.failure(url, "files", reasons.TOO_LARGE, f"{len(body)} bytes > max_bytes {max_bytes}")
    return rows.doc(url, "files", body, content_type="text/plain", encodings=_TEXT_FROM_JSON)


# ----------------------------------------------------------------------------- warc


def _archive_iterator(f):
    from warcio.archiveiterator import ArchiveIterator  # only for WARC sources

    class CheckedArchiveIterator(ArchiveIterator):
        """warcio stops quietly at a truncated gzip member; this notices."""

        truncated = False

        def close(self) -> None:
            decompressor = self.reader.decompressor if self.reader is not None else None
            if decompressor is not None and not decompressor.eof:
                self.truncated = True
            super().close()

    return CheckedArchiveIterator(f)


def warc_rows(path: str, cfg: CrawlConfig) -> Iterator[Row]:
    """The HTTP 200 responses of an allowed content type in a WARC file (gzipped or not)."""
    allowed = {t.lower() for t in cfg.content_types}
    try:
        f = open(path, "rb")
    except OSError as e:
        yield rows.failure(path, "warc", reasons.UNREADABLE, f"{type(e).__name__}: {e.strerror or e}")
        return
    with f:
        n = 0
        records = _archive_iterator(f)
        try:
            for record in records:
                if record.format != "warc":  # warcio also reads ARC, and takes any text for it
                    yield rows.failure(path, "warc", reasons.MALFORMED, f"record {n + 1} is not a WARC record")
                    return
                n += 1
                if record.rec_type != "response" or record.http_headers is None:
                    continue  # requests, metadata, warcinfo, revisits, dns: not documents
                yield _warc_response(record, allowed, cfg.max_bytes)
        except Exception as e:  # noqa: BLE001 - ArchiveLoadFailed, zlib.error, EOFError...: a corrupt archive
            # cannot be resynchronised; what was read stays, the rest is one failure
            yield rows.failure(path, "warc", reasons.MALFORMED, f"unreadable after {n} records: {_describe(e)}")
            return
        if records.truncated:
            yield rows.failure(path, "warc", reasons.MALFORMED, f"truncated: the file ends inside record {n + 1}")


def _warc_response(record, allowed: set[str], max_bytes: int) -> Row:
    url = record.rec_headers.get_header("WARC-Target-URI") or record.rec_headers.get_header("WARC-Record-ID") or "?"
    status_text = record.http_headers.get_statuscode()
    try:
        status = int(status_text)
    except (TypeError, ValueError):
        return rows.failure(url, "warc", reasons.MALFORMED, f"bad HTTP status line {status_text!r}")
    if status != 200:
        return rows.failure(url, "warc", reasons.HTTP_ERROR, f"HTTP {status}", status)
    content_type = record.http_headers.get_header("Content-Type")
    media = media_type(content_type)
    if media not in allowed:
        return rows.failure(
            url, "warc", reasons.CONTENT_TYPE, f"{media or 'no Content-Type'} is not in content_types", status
        )
    body = record.content_stream().read(max_bytes + 1)  # undoes chunked and gzip transfer encodings
    if len(body) > max_bytes:
        return rows.failure(url, "warc", reasons.TOO_LARGE, f"more than max_bytes {max_bytes} bytes", status)
    return rows.doc(
        url,
        "warc",
        body,
        content_type=media,
        encodings=sniff(body, content_type, media),
        status=status,
        fetched_at=_warc_date(record.rec_headers.get_header("WARC-Date")),
    )


def _warc_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# ----------------------------------------------------------------------------- hf datasets


def hf_id_prefix(src: HFDatasetSource) -> str:
    """`hf://path[/name]/split`, plus a short hash of `data_files` when given: two local json
    sources with different files must not share document URLs."""
    prefix = f"hf://{src.path}" + (f"/{src.name}" if src.name else "") + f"/{src.split}"
    if src.data_files is not None:
        digest = hashlib.sha256(json.dumps(src.data_files, sort_keys=True).encode()).hexdigest()[:8]
        prefix += f"@{digest}"
    return prefix


def hf_rows(src: HFDatasetSource, where: str, max_bytes: int) -> Iterator[Row]:
    import datasets  # heavy: only for a hub dataset

    try:
        ds = datasets.load_dataset(
            src.path, src.name, data_files=src.data_files, split=src.split, streaming=src.streaming
        )
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "this source cannot be read"
        raise CrawlInputError(f"{where}: cannot load dataset {src.path!r}: {_describe(e)}") from e
    columns = ds.column_names
    if columns is not None and src.text_field not in columns:
        raise CrawlInputError(
            f"{where}: dataset {src.path!r} has no column {src.text_field!r} (columns: {', '.join(columns)})"
        )
    prefix = hf_id_prefix(src)
    kept = 0
    records = iter(ds)
    index = -1
    while src.max_docs is None or kept < src.max_docs:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - a corrupt file met while streaming
            raise CrawlInputError(f"{where}: dataset {src.path!r} failed after {index + 1} rows: {_describe(e)}") from e
        index += 1
        url = f"{prefix}/{index}"
        text = record.get(src.text_field)
        if not isinstance(text, str):
            yield rows.failure(
                url, "hf_dataset", reasons.MALFORMED, f"{src.text_field!r} is {type(text).__name__}, not text"
            )
            continue
        body = text.encode("utf-8", errors="replace")  # a lone surrogate from JSON becomes "?"
        if len(body) > max_bytes:
            yield rows.failure(url, "hf_dataset", reasons.TOO_LARGE, f"{len(body)} bytes > max_bytes {max_bytes}")
            continue
        kept += 1
        yield rows.doc(url, "hf_dataset", body, content_type="text/plain", encodings=_TEXT_FROM_JSON)


# ----------------------------------------------------------------------------- fingerprint inputs


def _stamp(paths: list[Path | str]) -> str:
    """A digest of each file's name, size and modification time: a changed input, a new artifact."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return f"{len(paths)} files, {h.hexdigest()[:16]}"


def _local_data_files(src: HFDatasetSource) -> list[str]:
    spec = src.data_files
    patterns: list[str] = []
    if isinstance(spec, str):
        patterns = [spec]
    elif isinstance(spec, list):
        patterns = list(spec)
    elif isinstance(spec, dict):
        for v in spec.values():
            patterns.extend([v] if isinstance(v, str) else v)
    if Path(src.path).is_dir():
        patterns.append(str(Path(src.path) / "**" / "*"))
    found: set[str] = set()
    for pattern in patterns:
        found.update(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    return sorted(found)


def local_inputs(cfg: CrawlConfig) -> dict[str, str]:
    """Fingerprint inputs for the local files the crawl reads; raises `CrawlInputError` for a
    missing `files` folder or WARC file."""
    inputs: dict[str, str] = {}
    for i, src in enumerate(cfg.files):
        inputs[f"files[{i}]"] = _stamp([str(p) for p in match_files(src)])
    for i, path in enumerate(cfg.warc):
        if not Path(path).is_file():
            raise CrawlInputError(f"warc[{i}]: {path!r} does not exist")
        inputs[f"warc[{i}]"] = _stamp([path])
    for i, src in enumerate(cfg.hf_dataset):
        local = _local_data_files(src)
        if local:  # a hub dataset is identified by its config alone, though it may change on the hub
            inputs[f"hf_dataset[{i}]"] = _stamp(local)
    return inputs
