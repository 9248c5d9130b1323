"""The crawl's non-web sources on real files: WARC archives, folders of documents, and Hugging Face
datasets read from local json/jsonl/parquet files (never the hub)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import FailAfter, Interrupted
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from lm_core.config import CrawlConfig, FilesSource, HFDatasetSource
from lm_core.crawl import reasons
from lm_core.crawl.sources import CrawlInputError
from lm_core.crawl.stage import NoDocuments, crawl_fingerprint, run_crawl
from lm_core.schemas import FAILURE, RAW_DOC
from lm_core.shards import read_shard, shard_paths
from lm_core.workspace import Workspace


def read_all(folder: Path, schema: pa.Schema) -> list[dict]:
    return [row for p in shard_paths(folder) for row in read_shard(p, schema).to_pylist()]


def crawl(cfg: CrawlConfig, root: Path, **kw):
    ref = run_crawl(cfg, Workspace(root), **kw)
    return ref, read_all(ref.dir / "docs", RAW_DOC), read_all(ref.dir / "failures", FAILURE)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Non-streaming `load_dataset` writes a cache: keep it in the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(tmp_path / "hf-cache"))


# ----------------------------------------------------------------------------- warc

CP1252_PAGE = "<html><body><p>“Smart quotes” and 5 €</p></body></html>".encode("cp1252")


def write_warc(path: Path, gzip: bool) -> None:
    def response(writer, uri, status, content_type, body):
        headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers))

    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=gzip)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "lmforge tests"}))
        request = StatusAndHeaders("GET /a HTTP/1.1", [("Host", "example.com")], is_http_request=True)
        w.write_record(
            w.create_warc_record("http://example.com/a", "request", payload=io.BytesIO(b""), http_headers=request)
        )
        response(w, "http://example.com/a", "200 OK", "text/html; charset=windows-1252", CP1252_PAGE)
        response(w, "http://example.com/b.txt", "200 OK", "text/plain", b"plain words\n")
        response(w, "http://example.com/gone", "404 Not Found", "text/html", b"<p>gone</p>")
        response(w, "http://example.com/logo.png", "200 OK", "image/png", b"\x89PNG....")


@pytest.mark.parametrize("gzip", [True, False], ids=["warc.gz", "warc"])
def test_warc_keeps_ok_responses_of_allowed_types(tmp_path, gzip):
    path = tmp_path / ("crawl.warc.gz" if gzip else "crawl.warc")
    write_warc(path, gzip)
    ref, docs, failures = crawl(CrawlConfig(warc=[str(path)]), tmp_path / "ws")
    assert [(d["url"], d["content_type"], d["status"]) for d in docs] == [
        ("http://example.com/a", "text/html", 200),
        ("http://example.com/b.txt", "text/plain", 200),
    ]
    assert docs[0]["body"] == CP1252_PAGE and docs[0]["declared_encoding"] == "cp1252"
    assert docs[0]["source"] == "warc" and docs[0]["fetched_at"] is not None
    assert [(f["url"], f["reason"], f["status"]) for f in failures] == [
        ("http://example.com/gone", reasons.HTTP_ERROR, 404),
        ("http://example.com/logo.png", reasons.CONTENT_TYPE, 200),
    ]
    assert ref.stats["documents_by_source"] == {"warc": 2}


def test_a_corrupt_warc_is_a_failure_not_a_crash(tmp_path):
    good = tmp_path / "good.warc.gz"
    write_warc(good, gzip=True)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.warc.gz"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbage = tmp_path / "garbage.warc"
    garbage.write_bytes(b"this is not a WARC file at all\n" * 10)
    _, docs, failures = crawl(CrawlConfig(warc=[str(truncated), str(garbage)]), tmp_path / "ws")
    malformed = [f["url"] for f in failures if f["reason"] == reasons.MALFORMED]
    assert malformed == [str(truncated), str(garbage)]
    assert {d["url"] for d in docs} <= {"http://example.com/a", "http://example.com/b.txt"}  # what came before the cut


# ----------------------------------------------------------------------------- files


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.html").write_text('<html><head><meta charset="utf-8"></head><body>Hello</body></html>', encoding="utf-8")
    (root / "b.htm").write_bytes(b'<meta charset="windows-1252"><p>caf\xe9 \x93ok\x94</p>')
    (root / "notes.txt").write_text("plain notes\n", encoding="utf-8")
    (root / "latin.txt").write_bytes(
        ("Ceci est un texte en français, écrit à la main. Où êtes-vous? " * 5).encode("latin-1")
    )
    (root / "readme.md").write_text("# Title\n\nSome *markdown*.\n", encoding="utf-8")
    (root / "sub" / "deep.txt").write_text("nested\n", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "big.txt").write_text("x" * 5000, encoding="utf-8")
    os.symlink(root / "does-not-exist.txt", root / "broken.txt")  # unreadable, even for root
    (root / "records.jsonl").write_bytes(
        b'{"text": "first record"}\n'
        b'{"text": "second record", "id": 2}\n'
        b"this line is not json\n"
        b'{"body": "no text field"}\n'
        b"\n"
        b'["not", "an", "object"]\n'
        b'{"text": "sixth line"}\n'
    )
    return root


def test_files_become_documents_and_bad_inputs_failures(tmp_path, corpus):
    cfg = CrawlConfig(files=[FilesSource(path=str(corpus))], max_bytes=4000)
    ref, docs, failures = crawl(cfg, tmp_path / "ws")
    at = lambda name: str(corpus / name)  # noqa: E731
    got = {d["url"]: (d["content_type"], d["body"]) for d in docs}
    assert got == {
        at("a.html"): ("text/html", (corpus / "a.html").read_bytes()),
        at("b.htm"): ("text/html", (corpus / "b.htm").read_bytes()),
        at("latin.txt"): ("text/plain", (corpus / "latin.txt").read_bytes()),
        at("notes.txt"): ("text/plain", b"plain notes\n"),
        at("readme.md"): ("text/markdown", (corpus / "readme.md").read_bytes()),
        at("sub/deep.txt"): ("text/plain", b"nested\n"),
        at("records.jsonl") + ":1": ("text/plain", b"first record"),
        at("records.jsonl") + ":2": ("text/plain", b"second record"),
        at("records.jsonl") + ":7": ("text/plain", b"sixth line"),
    }
    assert {f["url"]: f["reason"] for f in failures} == {
        at("big.txt"): reasons.TOO_LARGE,
        at("broken.txt"): reasons.UNREADABLE,
        at("image.png"): reasons.CONTENT_TYPE,
        at("records.jsonl") + ":3": reasons.MALFORMED,
        at("records.jsonl") + ":4": reasons.MALFORMED,
        at("records.jsonl") + ":6": reasons.MALFORMED,
    }
    enc = {d["url"]: (d["declared_encoding"], d["detected_encoding"]) for d in docs}
    assert enc[at("b.htm")] == ("cp1252", None)
    assert enc[at("a.html")] == ("utf-8", None)
    declared, detected = enc[at("latin.txt")]  # non-UTF-8, declared nowhere: detected
    assert declared is None and detected is not None and detected != "utf-8"
    assert enc[at("records.jsonl") + ":1"] == ("utf-8", None)
    assert {d["source"] for d in docs} == {"files"}
    assert ref.stats["rows"] == 9 and ref.stats["failures_by_reason"] == {
        "too_large": 1,
        "unreadable": 1,
        "content_type": 1,
        "malformed": 3,
    }


def test_files_glob_and_single_file(tmp_path, corpus):
    _, docs, failures = crawl(
        CrawlConfig(files=[FilesSource(path=str(corpus), glob="**/*.txt")], max_bytes=100_000), tmp_path / "ws1"
    )
    assert sorted(Path(d["url"]).name for d in docs) == ["big.txt", "deep.txt", "latin.txt", "notes.txt"]
    assert [Path(f["url"]).name for f in failures] == ["broken.txt"]
    _, docs, _ = crawl(CrawlConfig(files=[FilesSource(path=str(corpus / "records.jsonl"))]), tmp_path / "ws2")
    assert [d["body"] for d in docs] == [b"first record", b"second record", b"sixth line"]


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CrawlInputError, match="does-not-exist"):
        run_crawl(CrawlConfig(files=[FilesSource(path=str(tmp_path / "does-not-exist"))]), Workspace(tmp_path / "ws"))
    with pytest.raises(CrawlInputError, match="warc"):
        run_crawl(CrawlConfig(warc=[str(tmp_path / "nope.warc.gz")]), Workspace(tmp_path / "ws"))


def test_a_folder_with_nothing_to_read_is_a_clear_error_and_publishes_nothing(tmp_path):
    empty, unsupported = tmp_path / "empty", tmp_path / "unsupported"
    empty.mkdir()
    unsupported.mkdir()
    (unsupported / "a.pdf").write_bytes(b"%PDF-1.4")
    (unsupported / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(NoDocuments) as e:
        run_crawl(CrawlConfig(files=[FilesSource(path=str(empty), glob="**/*.md")]), ws)
    assert str(e.value) == (
        f"the crawl fetched no document: files[0]: folder {str(empty)!r} holds no files "
        "(glob '**/*.md' matched nothing)"
    )
    with pytest.raises(NoDocuments) as e:
        run_crawl(CrawlConfig(files=[FilesSource(path=str(unsupported))]), ws)
    assert str(e.value) == (
        "the crawl fetched no document: all 2 failures are content_type, "
        f"e.g. {unsupported / 'a.pdf'}: .pdf: not a supported document type"
    )
    assert ws.artifacts("crawl") == [] and not list((ws.root / "crawl").glob(".partial-*"))


def test_a_changed_input_file_makes_a_new_artifact(tmp_path, corpus):
    cfg = CrawlConfig(files=[FilesSource(path=str(corpus))])
    before = crawl_fingerprint(cfg)
    assert crawl_fingerprint(cfg) == before
    notes = corpus / "notes.txt"
    notes.write_text("changed notes, longer\n", encoding="utf-8")
    assert crawl_fingerprint(cfg) != before
    assert crawl_fingerprint(cfg.model_copy(update={"docs_per_shard": 7})) == crawl_fingerprint(cfg)  # performance only


# ----------------------------------------------------------------------------- hf datasets


@pytest.fixture
def jsonl_dataset(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    records = [{"text": f"document number {i}", "n": i} for i in range(5)]
    records.insert(2, {"text": None, "n": -1})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "loaded"])
def test_hf_dataset_from_local_jsonl(tmp_path, jsonl_dataset, streaming):
    src = HFDatasetSource(path="json", data_files=str(jsonl_dataset), streaming=streaming)
    ref, docs, failures = crawl(CrawlConfig(hf_dataset=[src]), tmp_path / "ws")
    assert [d["body"].decode() for d in docs] == [f"document number {i}" for i in range(5)]
    assert all(d["source"] == "hf_dataset" and d["content_type"] == "text/plain" for d in docs)
    assert len({d["url"] for d in docs}) == 5 and docs[0]["url"].startswith("hf://json/train@")
    assert [(f["url"].rsplit("/", 1)[1], f["reason"]) for f in failures] == [("2", reasons.MALFORMED)]


def test_hf_dataset_max_docs_and_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"content": [f"parquet row {i}" for i in range(10)]}), path)
    src = HFDatasetSource(path="parquet", data_files={"train": str(path)}, text_field="content", max_docs=3)
    _, docs, _ = crawl(CrawlConfig(hf_dataset=[src]), tmp_path / "ws")
    assert [d["body"] for d in docs] == [b"parquet row 0", b"parquet row 1", b"parquet row 2"]


def test_hf_dataset_without_the_text_column_is_a_clear_error(tmp_path, jsonl_dataset):
    src = HFDatasetSource(path="json", data_files=str(jsonl_dataset), text_field="body")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(CrawlInputError, match="no column 'body'"):
        run_crawl(CrawlConfig(hf_dataset=[src]), ws)
    assert ws.artifacts("crawl") == []


# ----------------------------------------------------------------------------- together, and resumed


def combined_config(tmp_path: Path, corpus: Path, jsonl_dataset: Path) -> CrawlConfig:
    warc = tmp_path / "crawl.warc.gz"
    if not warc.exists():
        write_warc(warc, gzip=True)
    return CrawlConfig(
        files=[FilesSource(path=str(corpus))],
        warc=[str(warc)],
        hf_dataset=[HFDatasetSource(path="json", data_files=str(jsonl_dataset))],
        max_bytes=4000,
        docs_per_shard=2,
    )


def test_combined_sources_in_one_artifact(tmp_path, corpus, jsonl_dataset):
    ref, docs, failures = crawl(combined_config(tmp_path, corpus, jsonl_dataset), tmp_path / "ws")
    assert ref.stats["documents_by_source"] == {"files": 9, "warc": 2, "hf_dataset": 5}
    assert [d["source"] for d in docs] == ["files"] * 9 + ["warc"] * 2 + ["hf_dataset"] * 5  # in plan order
    assert ref.stats["rows"] == 16 and len(failures) == ref.stats["failures"] == 6 + 2 + 1


def test_interrupted_local_crawl_resumes_without_loss_or_repeats(tmp_path, corpus, jsonl_dataset):
    cfg = combined_config(tmp_path, corpus, jsonl_dataset)
    _, whole_docs, whole_failures = crawl(cfg, tmp_path / "whole")
    ws = Workspace(tmp_path / "interrupted")
    for stop_after in (4, 10):  # once inside files, once inside the warc / dataset
        with pytest.raises(Interrupted):
            run_crawl(cfg, ws, FailAfter(stop_after))
    ref = run_crawl(cfg, ws)
    docs = read_all(ref.dir / "docs", RAW_DOC)
    failures = read_all(ref.dir / "failures", FAILURE)
    assert [d["url"] for d in docs] == [d["url"] for d in whole_docs]
    assert sorted(f["url"] for f in failures) == sorted(f["url"] for f in whole_failures)
    assert ref.stats["resumes"] == 2
