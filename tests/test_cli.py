"""The `lmforge` command line: errors before work, listing, single stages."""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

# Prefect binds its console log handler to the sys.stderr of the moment it sets up logging (when
# `prefect.main` is imported): do it now, not inside the first `invoke`, whose captured stream is
# closed afterwards (later commands' Prefect logs would fail to print, with a "Logging error"
# traceback in their output)
import prefect.main  # noqa: F401
import yaml
from typer.testing import CliRunner

from lmforge.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_a_bad_value_stops_before_any_work(tmp_path):
    ws = tmp_path / "ws"
    r = invoke("data", "--set", f"workspace={ws}", "--set", "crawl.max_pages=-1")
    assert r.exit_code == 2
    assert "crawl.max_pages" in r.output and "greater than 0" in r.output
    assert not ws.exists(), "nothing may be created before the config is valid"


def test_an_error_is_printed_unwrapped_so_what_it_names_can_be_copied(tmp_path):
    long_path = tmp_path / ("a-long-folder-name-" * 6) / "config.yaml"
    r = invoke("run", "--config", str(long_path), "--set", f"workspace={tmp_path / 'ws'}")
    assert r.exit_code == 2 and str(long_path) in r.output


def test_unknown_stage_is_refused(tmp_path):
    r = invoke("stage", "pretrian", "--set", f"workspace={tmp_path}")
    assert r.exit_code == 2 and "unknown stage 'pretrian'" in r.output


def test_a_named_input_fits_only_its_stages(tmp_path):
    ws = ["--set", f"workspace={tmp_path}"]
    r = invoke("stage", "clean", "--model", "latest", *ws)
    assert r.exit_code == 2 and "--model is for finetune and evaluate" in r.output
    r = invoke("stage", "evaluate", "--data", "latest", *ws)
    assert r.exit_code == 2 and "--data is for pretrain" in r.output
    r = invoke("stage", "evaluate", "--model", "latest", "--input", "latest", *ws)
    assert r.exit_code == 2 and "give one of" in r.output
    r = invoke("stage", "clean", "--refresh", *ws)  # only the crawl fetches anything
    assert r.exit_code == 2 and "applies to the crawl stage, not 'clean'" in r.output


def test_only_node_0_may_discard_a_shared_training(tmp_path):
    ws = tmp_path / "ws"
    partial = ws / "pretrain" / ".partial-0123abcd"
    partial.mkdir(parents=True)
    r = invoke("stage", "pretrain", "--restart", "--nnodes", "2", "--set", "pretrain.distributed.node_rank=1",
               "--set", f"workspace={ws}")  # fmt: skip
    assert r.exit_code == 2 and "run it on node 0" in r.output
    assert partial.is_dir(), "node 1 must leave node 0's build alone"


def test_config_prints_the_resolved_values():
    r = invoke("config", "--config", "configs/tiny.yaml", "--set", "chunk.seq_len=48")
    assert r.exit_code == 0
    resolved = yaml.safe_load(r.output)
    assert resolved["chunk"]["seq_len"] == 48 and resolved["crawl"]["pydoc"] is True


def test_single_stages_run_on_the_latest_input_and_ls_lists_them(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    sentence = "The {w} library reads shards of text and writes clean documents for training a model."
    for i, w in enumerate(["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry"]):
        (docs / f"{w}.txt").write_text(" ".join(sentence.format(w=w) + f" Note {i}.{j}." for j in range(12)))
    base = ["--set", f"workspace={tmp_path / 'ws'}", "--set", f"crawl.files=[{{path: {docs}}}]"]

    r = invoke("stage", "clean", *base)
    assert r.exit_code == 1 and "no published crawl artifact" in r.output

    assert invoke("stage", "crawl", *base).exit_code == 0
    r = invoke("stage", "clean", *base, "--set", "clean.quality.min_words=10", "--set", "clean.dedup.near=false")
    assert r.exit_code == 0, r.output
    r = invoke("ls", *base)
    assert r.exit_code == 0
    assert "crawl" in r.output and "clean" in r.output and "crawl:" in r.output  # clean lists its input


def test_gc_removes_the_crawl_copies_nothing_was_built_from_and_waits_for_running_builds(tmp_path):
    from lm_core.config import load_config
    from lm_core.crawl.stage import run_crawl
    from lm_core.workspace import Workspace

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A page that the nightly refresh finds unchanged. " * 20)
    base = ["--set", f"workspace={tmp_path / 'ws'}", "--set", f"crawl.files=[{{path: {docs}}}]"]
    cfg = load_config(None, [b for b in base if b != "--set"])
    ws = Workspace(cfg.workspace)
    first, unchanged, newest = (
        run_crawl(cfg.crawl, ws, snapshot=s) for s in ("", "2026-11-24T02:00:00Z", "2026-11-25T02:00:00Z")
    )

    with ws.build("clean", "0123abcd", config={}, inputs={}):  # a clean running in another command
        r = invoke("gc", *base)
        assert r.exit_code == 1 and "builds are running" in r.output and "clean/0123abcd" in r.output
    r = invoke("gc", "--dry-run", *base)
    assert r.exit_code == 0 and f"would remove crawl {unchanged.fingerprint}" in r.output
    assert ws.is_published("crawl", unchanged.fingerprint)
    r = invoke("gc", *base)
    assert r.exit_code == 0 and f"removed crawl {unchanged.fingerprint}" in r.output
    assert f"removed crawl {first.fingerprint}" in r.output  # nothing names the first crawl either
    assert [a["fingerprint"] for a in ws.artifacts("crawl")] == [newest.fingerprint]
    assert "0 crawl snapshot(s)" in invoke("gc", *base).output


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_crawl_that_fetches_nothing_is_one_clear_error_naming_the_fix(tmp_path):
    from lm_core.workspace import Workspace

    site = tmp_path / "site"
    site.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
    ws = tmp_path / "ws"
    args = ["stage", "crawl", "--set", f"workspace={ws}", "--set", f"crawl.urls=[{url}]"]
    logged: list[logging.LogRecord] = []  # what Prefect logs about the failed runs
    catcher = logging.Filter()  # a filter, not a handler: Prefect's logging setup keeps filters
    catcher.filter = lambda record: logged.append(record) or True
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(catcher)
    try:
        r = invoke(*args)
        assert r.exit_code == 1
        assert r.output.count("error:") == 1 and "Traceback" not in r.output
        assert (
            f"error: the crawl fetched no document: {url} (private_address): 127.0.0.1 is a loopback address; "
            "set crawl.allow_loopback: true to crawl it"
        ) in r.output
        messages = [record.getMessage() for record in logged]
        assert any("NoDocuments" in m for m in messages)  # Prefect logged the failure ...
        assert not any(record.exc_info for record in logged)  # ... without a traceback
        assert not any("Retries are exhausted" in m for m in messages)  # and did not retry what would fail again

        (site / "page.html").write_text("<html><body><p>The page.</p></body></html>")
        r = invoke(*args, "--set", "crawl.allow_loopback=true")  # the fix: crawled, nothing stale in the way
        assert r.exit_code == 0, r.output
        assert [a["manifest"]["rows"] for a in Workspace(ws).artifacts("crawl")] == [1]
    finally:
        for name in RUN_LOGGERS:
            logging.getLogger(name).removeFilter(catcher)
        server.shutdown()
        server.server_close()
