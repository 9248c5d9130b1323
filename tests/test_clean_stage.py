"""The clean stage end to end on a raw crawl artifact built here: accounting, reasons, ids,
determinism under any shard scheduler, caching, and failure on corrupt input."""

import random
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from lm_core.clean.fingerprint import clean_fingerprint
from lm_core.clean.pipeline import document_id
from lm_core.clean.stage import CleanError, run_clean
from lm_core.config import CleanConfig, LanguageConfig
from lm_core.progress import NullProgress
from lm_core.progress import thread_map as progress_thread_map
from lm_core.schemas import CLEAN_DOC, RAW_DOC, REJECTED
from lm_core.shards import CorruptShardError, read_shard, shard_name, shard_paths, write_shard
from lm_core.workspace import ArtifactRef, Workspace, fingerprint

_VOCAB = (
    "river stone garden window market letter summer paper engine forest bridge candle silver orange "
    "pencil ladder kitchen winter harbor island planet rocket violin castle meadow thunder blanket "
    "mirror pillow tunnel basket jacket wallet button ribbon anchor compass lantern marble saddle"
).split()

GERMAN = (
    "Der Leuchtturmwärter führte ein sorgfältiges Logbuch über jedes Schiff, das die felsige Landzunge "
    "passierte. Die meisten Einträge waren kurz, doch während der Stürme im frühen Winter wurden sie lang "
    "und besorgt. Besucher kamen selten, obwohl jeden zweiten Dienstag ein Versorgungsboot mit Mehl, "
    "Lampenöl und einem Bündel alter Zeitungen ankam, die immer mindestens eine Woche alt waren. Er las "
    "sie langsam und hob sich das Kreuzworträtsel für die Abende auf, an denen der Wind am lautesten war."
)


def article(seed: int, n_words: int = 240) -> str:
    rng = random.Random(seed)
    words = [rng.choice(_VOCAB) for _ in range(n_words)]
    return "\n".join(" ".join(words[i : i + 12]) + "." for i in range(0, n_words, 12))


def html(body_text: str) -> bytes:
    paragraphs = "".join(f"<p>{line}</p>" for line in body_text.split("\n"))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
        f"<article>{paragraphs}</article><footer>Copyright 2024</footer></body></html>"
    ).encode()


def raw(url: str, body: bytes, content_type: str | None = "text/plain", declared: str | None = "utf-8") -> dict:
    return {
        "url": url,
        "source": "urls",
        "fetched_at": datetime(2024, 1, 1, tzinfo=UTC),
        "status": 200,
        "content_type": content_type,
        "declared_encoding": declared,
        "detected_encoding": None,
        "body": body,
    }


def corpus() -> list[list[dict]]:
    """Three raw shards: good documents plus one of each kind of reject, duplicates across shards."""
    a, b = article(1), article(2)
    return [
        [
            raw("https://x.org/a", a.encode()),
            raw("https://x.org/b.html", html(b), "text/html"),
            raw("https://x.org/short", b"Too short, write to jane@example.com."),
            raw("https://x.org/empty", b""),
            raw("https://x.org/contact", f"{article(3)}\nWrite to jane@example.com or call +44 20 7946 0958.".encode()),
        ],
        [
            raw("https://x.org/a-again", a.upper().replace("\n", "\n\n").encode()),  # exact after normalising
            raw("https://x.org/b.html?v=2", (b.replace("river", "creek", 1) + " zeppelin").encode()),  # near
            raw("https://x.org/binary", random.Random(0).randbytes(3000), "text/html", None),
            raw("https://x.org/paper.pdf", b"%PDF-1.7 binary", "application/pdf", None),
            raw("https://x.org/latin1", article(4).replace("river", "café").encode("cp1252"), "text/plain", None),
        ],
        [
            raw("https://x.org/c", article(5).encode()),
            raw("https://x.org/de", GERMAN.encode()),
        ],
    ]


def make_crawl(ws: Workspace, shards: list[list[dict]]) -> ArtifactRef:
    fp = fingerprint("crawl", {"test": repr(shards)[:2000]}, {}, 1)
    with ws.build("crawl", fp, config={}, inputs={}) as build:
        for i, rows in enumerate(shards):
            write_shard(build.dir / "docs" / shard_name(i), pa.Table.from_pylist(rows, RAW_DOC))
        build.stats = {"rows": sum(len(s) for s in shards)}
    return build.ref


def read_all(folder) -> pa.Table:
    tables = [read_shard(p) for p in shard_paths(folder)]
    return pa.concat_tables(tables) if tables else None


def thread_map(fn, items, progress=NullProgress()):
    return progress_thread_map(fn, items, progress, workers=3)


@pytest.fixture
def crawled(tmp_path):
    ws = Workspace(tmp_path / "ws")
    return ws, make_crawl(ws, corpus())


def test_every_document_is_accounted_for_exactly_once(crawled):
    ws, crawl = crawled
    ref = run_clean(CleanConfig(), crawl, ws)
    docs, rejected = read_all(ref.dir / "docs"), read_all(ref.dir / "rejected")
    assert docs.schema.equals(CLEAN_DOC) and rejected.schema.equals(REJECTED)

    urls_in = [row["url"] for shard in corpus() for row in shard]
    urls_out = docs.column("url").to_pylist() + rejected.column("url").to_pylist()
    assert sorted(urls_out) == sorted(urls_in)

    reasons = dict(zip(rejected.column("url").to_pylist(), rejected.column("reason").to_pylist(), strict=True))
    assert reasons == {
        "https://x.org/short": "min_words",
        "https://x.org/empty": "empty",
        "https://x.org/a-again": "duplicate",
        "https://x.org/b.html?v=2": "near_duplicate",
        "https://x.org/binary": "not_text",
        "https://x.org/paper.pdf": "unsupported_content_type",
    }
    kept = docs.column("url").to_pylist()
    assert kept == sorted(kept)  # URL order, whatever order the crawl kept them in
    assert set(kept) == {
        "https://x.org/a",
        "https://x.org/b.html",
        "https://x.org/contact",
        "https://x.org/latin1",
        "https://x.org/c",
        "https://x.org/de",
    }

    stats = ref.stats
    assert stats["documents_in"] == 12 and stats["kept"] == stats["rows"] == 6
    assert stats["rejected_by_reason"] == {
        "duplicate": 1,
        "empty": 1,
        "min_words": 1,
        "near_duplicate": 1,
        "not_text": 1,
        "unsupported_content_type": 1,
    }
    assert stats["pii_replacements"] == {"email": 1, "phone": 1}
    assert stats["words"] == sum(docs.column("n_words").to_pylist())
    assert stats["bytes"] == sum(docs.column("n_bytes").to_pylist())
    assert set(stats["seconds"]) == {"filter", "dedup", "write"}
    assert ref.manifest()["rows"] == 6 and ref.manifest()["inputs"] == {"crawl": crawl.fingerprint}


def test_kept_documents_are_clean_and_identified_by_their_text(crawled):
    ws, crawl = crawled
    ref = run_clean(CleanConfig(), crawl, ws)
    docs = {d["url"]: d for d in read_all(ref.dir / "docs").to_pylist()}
    for d in docs.values():
        assert d["id"] == document_id(d["text"])
        assert d["n_bytes"] == len(d["text"].encode()) and d["n_words"] == len(d["text"].split())
        assert d["language"] is None  # language filter off
    assert "<email>" in docs["https://x.org/contact"]["text"] and "jane@" not in docs["https://x.org/contact"]["text"]
    assert "<phone>" in docs["https://x.org/contact"]["text"]
    assert "café" in docs["https://x.org/latin1"]["text"]  # undeclared windows-1252
    html_text = docs["https://x.org/b.html"]["text"]
    assert html_text.startswith(article(2).split("\n")[0]) and "Copyright" not in html_text


def test_duplicates_name_the_kept_document_they_copy(crawled):
    ws, crawl = crawled
    ref = run_clean(CleanConfig(), crawl, ws)
    ids = {d["url"]: d["id"] for d in read_all(ref.dir / "docs").to_pylist()}
    rejected = {r["url"]: r for r in read_all(ref.dir / "rejected").to_pylist()}
    assert rejected["https://x.org/a-again"]["detail"] == ids["https://x.org/a"]
    assert rejected["https://x.org/b.html?v=2"]["detail"] == ids["https://x.org/b.html"]
    assert rejected["https://x.org/b.html?v=2"]["text"].endswith("zeppelin")  # what the rule saw
    assert rejected["https://x.org/short"]["detail"] == "5 words < 20"
    assert rejected["https://x.org/short"]["text"] == "Too short, write to <email>."  # scrubbed there too
    assert rejected["https://x.org/binary"]["text"] is None


def test_language_filter_records_codes_and_rejects_others(crawled):
    ws, crawl = crawled
    ref = run_clean(CleanConfig(language=LanguageConfig(keep=["en"])), crawl, ws)
    docs = read_all(ref.dir / "docs")
    assert "https://x.org/de" not in docs.column("url").to_pylist()
    assert set(docs.column("language").to_pylist()) == {"en"}
    rejected = {r["url"]: r for r in read_all(ref.dir / "rejected").to_pylist()}
    assert rejected["https://x.org/de"]["reason"] == "language" and rejected["https://x.org/de"]["detail"].startswith(
        "de"
    )
    by_language = [url for url, r in rejected.items() if r["reason"] == "language"]
    assert ref.stats["rejected_by_reason"]["language"] == len(by_language)


def test_output_is_byte_identical_serial_or_threaded(tmp_path):
    outputs = []
    for name, map_shards in (("serial", None), ("threads", thread_map)):
        ws = Workspace(tmp_path / name)
        crawl = make_crawl(ws, corpus())
        cfg = CleanConfig(docs_per_shard=4)  # three tasks
        ref = run_clean(cfg, crawl, ws, **({"map_shards": map_shards} if map_shards else {}))
        files = sorted(p for p in ref.dir.rglob("*.arrow"))
        outputs.append({str(p.relative_to(ref.dir)): p.read_bytes() for p in files})
    assert outputs[0] == outputs[1]
    assert {"docs/part-00000.arrow", "rejected/part-00001.arrow"} <= set(outputs[0])


def test_the_output_follows_from_the_documents_not_their_crawl_order(tmp_path):
    """A crawl keeps pages in the order they arrived, in shards of its configured size: clean
    reads them in URL order, so its output, down to which copy of a duplicate it keeps, is the
    same for the same documents (what lets its fingerprint take the crawl's content digest)."""
    shuffled = [row for shard in corpus() for row in shard]
    random.Random(7).shuffle(shuffled)
    outputs = []
    for name, shards in (("arrived", corpus()), ("shuffled", [shuffled[:7], shuffled[7:]])):
        ws = Workspace(tmp_path / name)
        ref = run_clean(CleanConfig(docs_per_shard=4), make_crawl(ws, shards), ws)
        outputs.append({str(p.relative_to(ref.dir)): p.read_bytes() for p in sorted(ref.dir.rglob("*.arrow"))})
    assert outputs[0] == outputs[1]
    assert {"docs/part-00000.arrow", "docs/part-00001.arrow"} <= set(outputs[0])


def test_rerun_returns_the_published_artifact_without_work(crawled):
    ws, crawl = crawled
    first = run_clean(CleanConfig(), crawl, ws)

    def must_not_run(fn, items, progress=None):
        raise AssertionError("the stage ran again")

    again = run_clean(CleanConfig(), crawl, ws, map_shards=must_not_run)
    assert again == first
    assert again.fingerprint == clean_fingerprint(CleanConfig(), crawl)
    # another config is another artifact
    other = run_clean(CleanConfig(favor="recall"), crawl, ws)
    assert other.fingerprint != first.fingerprint


def test_no_intermediate_files_are_published(crawled):
    ws, crawl = crawled
    ref = run_clean(CleanConfig(), crawl, ws)
    names = {p.relative_to(ref.dir).parts[0] for p in ref.dir.iterdir()}
    assert names == {"docs", "rejected", "outcomes", "_manifest.json"}  # outcomes: for later builds to reuse


def test_the_output_does_not_depend_on_how_the_work_is_split(tmp_path):
    """Jobs are cut by bytes to clean (a big page alone) and start biggest first; output shards
    still hold docs_per_shard input documents each, so the bytes are the same."""
    outputs, submitted = [], []

    def recording_map(fn, items, progress=NullProgress()):
        submitted.append([getattr(item, "weight", None) for item in items])
        return thread_map(fn, items, progress)

    for bytes_per_job in (1, 10**9):
        ws = Workspace(tmp_path / str(bytes_per_job))
        cfg = CleanConfig(docs_per_shard=4, bytes_per_job=bytes_per_job)
        ref = run_clean(cfg, make_crawl(ws, corpus()), ws, map_shards=recording_map)
        outputs.append({str(p.relative_to(ref.dir)): p.read_bytes() for p in sorted(ref.dir.rglob("*.arrow"))})
        assert ref.stats["jobs"] == (12 if bytes_per_job == 1 else 3)  # a job per document, or per output shard
    assert outputs[0] == outputs[1]
    per_document = submitted[0]  # the first run's filter jobs, as submitted
    assert len(per_document) == 12 and per_document == sorted(per_document, reverse=True)  # biggest first


def test_a_corrupt_input_shard_names_the_file_and_publishes_nothing(crawled):
    ws, crawl = crawled
    bad = crawl.dir / "docs" / shard_name(1)
    bad.write_bytes(b"this is not an arrow stream" * 10)
    with pytest.raises(CorruptShardError, match=shard_name(1)):
        run_clean(CleanConfig(), crawl, ws, map_shards=thread_map)
    assert ws.artifacts("clean") == []
    assert not any((ws.root / "clean").glob(".partial-*"))


def test_an_empty_crawl_is_a_clear_error(tmp_path):
    ws = Workspace(tmp_path / "ws")
    crawl = make_crawl(ws, [])
    with pytest.raises(CleanError, match="no document shards"):
        run_clean(CleanConfig(), crawl, ws)
    assert ws.artifacts("clean") == []


def test_progress_is_reported_per_shard_in_each_phase(crawled):
    ws, crawl = crawled
    events = []

    class Recorder:
        def start(self, total, unit):
            events.append(("start", total, unit))

        def advance(self, n=1):
            events.append(("advance", n))

    run_clean(CleanConfig(docs_per_shard=4), crawl, ws, progress=Recorder())  # 12 documents: three shards
    per_shard = [("advance", 1)] * 3  # each phase advances once per finished shard
    assert events == [("start", 3, "shards"), *per_shard, ("start", 3, "shards"), *per_shard]
