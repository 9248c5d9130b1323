"""The `lmforge` command line: errors before work, listing, single stages."""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Prefect binds its console log handler to the sys.stderr of the moment it sets up logging (when
# `prefect.main` is imported): do it now, not inside the first `invoke`, whose captured stream is
# closed afterwards (later commands' Prefect logs would fail to print, with a "Logging error"
# traceback in their output)
import prefect.main  # noqa: F401
import pytest
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


# ----------------------------------------------------------------------------- as a user sees it

LMFORGE = str(Path(sys.executable).parent / "lmforge")
REPO = Path(__file__).resolve().parents[1]


def lmforge_cli(*args: str, timeout: float = 600, **run) -> subprocess.CompletedProcess:
    """The installed `lmforge` as a user runs it from the repository: its output a pipe (not a
    terminal) read at 80 columns, stdout and stderr together as they interleave."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [LMFORGE, *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout, **run,
    )  # fmt: skip


def test_help_shows_no_types_for_flags_says_run_fine_tunes_and_version_prints():
    top = invoke("--help").output
    assert "--verbose" in top and "--version" in top
    for command in ("run", "data", "stage", "ls", "server"):
        text = invoke(command, "--help").output
        assert "<bool>" not in text and "<list" not in text, text
    assert "fine-tune" in invoke("run", "--help").output
    assert "SECTION.FIELD=VALUE" in invoke("run", "--help").output
    from importlib import metadata

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"lmforge {metadata.version('lmforge')}"


def test_verbose_is_taken_after_the_command_too():
    from lmforge.cli import _verbose_first

    assert _verbose_first(["run", "-v", "--set", "a=1"]) == ["--verbose", "run", "--set", "a=1"]
    assert _verbose_first(["generate", "--", "-v"]) == ["generate", "--", "-v"]  # a prompt, not the flag


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Inputs a user gets wrong, and one workspace for all of them (its Prefect database made once)."""
    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "bad.yaml").write_text("crawl: [unclosed\n")
    (d / "unknown-key.yaml").write_text("crawl:\n  max_pagez: 3\n")
    (d / "empty").mkdir()
    (d / "tiny").mkdir()
    (d / "tiny" / "a.txt").write_text("hi")  # crawled, then rejected by every filter: an empty corpus
    return d


# Each: the command line ({d}: the folder of `bad`, {port}: a port nothing listens on), and what its
# error line names.
BAD_INPUTS = {
    "bad-yaml": (["data", "--config", "{d}/bad.yaml"], "not valid YAML"),
    "unknown-key-in-file": (["data", "--config", "{d}/unknown-key.yaml"], "crawl.max_pagez"),
    "unknown-section": (["data", "--set", "nosuch.x=1"], "nosuch"),
    "set-without-value": (["data", "--set", "crawl.max_pages"], "expected key=value"),
    "bad-value": (["data", "--set", "crawl.max_pages=-1"], "crawl.max_pages"),
    "bad-threshold": (["data", "--set", "clean.dedup.threshold=high"], "clean.dedup.threshold"),
    "bad-bool": (["run", "--set", "finetune.enabled=maybe"], "finetune.enabled"),
    "missing-config": (["run", "--config", "{d}/nope.yaml"], "does not exist"),
    "unknown-stage": (["stage", "pretrian"], "unknown stage 'pretrian'"),
    "option-of-another-stage": (["stage", "clean", "--model", "latest"], "--model is for"),
    "missing-source-folder": (["data", "--set", "crawl.files=[{path: {d}/nonexistent}]"], "does not exist"),
    "empty-source-folder": (["data", "--set", "crawl.files=[{path: {d}/empty}]"], "holds no files"),
    "empty-corpus": (["data", "--set", "crawl.files=[{path: {d}/tiny}]"], "holds no documents"),
    "unreachable-urls": (
        ["stage", "crawl", "--set", "crawl.urls=[http://127.0.0.1:{port}/x]", "--set", "crawl.allow_loopback=true"],
        "fetched no document",
    ),
    "missing-input-artifact": (["stage", "pretrain", "--data", "deadbeef"], "chunk"),
    "unknown-registered-model": (["stage", "evaluate", "--model", "models:/nope@champion"], "registered"),
    "unreachable-tracking-server": (
        ["run", "--set", "tracking.tracking_uri=http://127.0.0.1:{port}"],
        "cannot reach the MLflow tracking server",
    ),
    "model-folder-without-a-model": (["generate", "--model", "{d}/empty", "The"], "empty"),
    "export-of-a-missing-model": (["export", "--model", "deadbeef", "--out", "{d}/out"], "deadbeef"),
    "servers-on-one-port": (["server", "--prefect-port", "{port}", "--mlflow-port", "{port}"], "share port"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_ends_in_one_error_line_and_no_traceback(bad, case):
    from lmforge.embedded import free_port

    template, named = BAD_INPUTS[case]
    port = str(free_port())  # closed again: nothing listens there
    args = [a.replace("{d}", str(bad)).replace("{port}", port) for a in template]
    r = lmforge_cli(*args, "--set", f"workspace={bad / 'ws'}")
    errors = [line for line in r.stdout.splitlines() if "error:" in line]
    assert r.returncode != 0, r.stdout
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stdout
    assert "Traceback" not in r.stdout and "Finished in state" not in r.stdout, r.stdout
    assert named in r.stdout, r.stdout


@pytest.mark.slow
def test_verbose_shows_the_traceback_and_the_run_logs_quiet_does_not(bad):
    args = ["data", "--set", f"crawl.files=[{{path: {bad}/nonexistent}}]", "--set", f"workspace={bad / 'ws-v'}"]
    loud = lmforge_cli("-v", *args)
    assert loud.returncode == 1 and "Traceback" in loud.stdout and "Flow run" in loud.stdout
    assert [line for line in loud.stdout.splitlines() if line.startswith("error:")] == [
        f"error: files source '{bad}/nonexistent' does not exist"
    ]


@pytest.mark.slow
@pytest.mark.prefect
def test_a_run_prints_a_quiet_summary_readable_at_80_columns_whose_commands_paste_and_run(tmp_path):
    ws = tmp_path / "ws"
    fast = ["pretrain.max_steps=8", "pretrain.eval_every=4", "pretrain.checkpoint_every=4",
            "finetune.max_steps=4", "finetune.eval_every=2"]  # fmt: skip
    r = lmforge_cli("run", "--config", "configs/tiny.yaml", "--set", f"workspace={ws}",
                    *(a for s in fast for a in ("--set", s)))  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, out
    # quiet: a line per stage, none of Prefect's run logs, MLflow's INFO lines or library warnings
    for noise in ("Finished in state", "INFO", "Traceback", "Warning", "pkg_resources", "Running hook"):
        assert noise not in out, f"{noise!r} printed:\n{out}"
    stage_lines = [line.split()[0] for line in out.splitlines() if re.match(r"^\w+ +[0-9a-f]{8}  (built|cached)", line)]
    assert stage_lines[:6] == ["crawl", "clean", "tokenize", "chunk", "stats", "pretrain"]
    assert {"finetune", "evaluate", "register"} <= set(stage_lines)

    summary = out[out.index("\nartifacts, each in") :].splitlines()
    assert summary[2].strip() == str(ws)  # the workspace, alone on its line
    commands = [line.strip() for line in summary if _program(line.strip()).endswith(("lmforge", "mlflow"))]
    # whatever is longer than 80 columns is a command alone on its line (a terminal may fold it; a
    # copy of it is one line), never a table's row or a path cut short
    for line in summary:
        assert len(line) <= 80 or line.strip() in commands or line.strip() == str(ws), f"over 80 columns: {line!r}"
        assert "…" not in line, f"a cut line: {line!r}"
    assert {c.split()[1] for c in commands if "lmforge" in c.split()[0]} >= {
        "ls", "generate", "export", "server", "chat"}  # fmt: skip

    # pasted into a shell in the same folder, each runs (the servers only checked to exist)
    for command in commands:
        words = shlex.split(command)
        assert shutil.which(_program(command)) or (REPO / _program(command)).is_file(), command
        if {"server", "serve"} & set(words):
            continue
        if "export" in words:
            command = command.replace("hf-model", str(tmp_path / "hf-model"))
        pasted = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        assert pasted.returncode == 0, f"{command}\n{pasted.stdout}\n{pasted.stderr}"


def _program(command: str) -> str:
    """The program a shell command line runs (after its VAR=value assignments)."""
    try:
        return next((w for w in shlex.split(command) if "=" not in w), "")
    except ValueError:  # not a command line (an unbalanced quote in a sample)
        return ""


def test_a_full_disk_and_lmforges_own_errors_read_as_one_plain_line_others_keep_their_type():
    import errno

    from lm_core.workspace import ArtifactError
    from lmforge.cli import _describe

    full = OSError(errno.ENOSPC, "No space left on device", "/ws/pretrain/.partial-1/model.safetensors")
    assert _describe(full) == (
        "the disk is full (/ws/pretrain/.partial-1/model.safetensors): free some space and run the command "
        "again; published artifacts are intact"
    )
    assert _describe(ArtifactError("no published chunk artifact in /ws")) == "no published chunk artifact in /ws"
    assert _describe(KeyError("params")) == "KeyError: 'params' (run with -v to see the traceback)"
