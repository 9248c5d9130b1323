"""The data flow through the embedded Prefect API: artifacts published, reruns cached in Prefect
and on disk, config changes make new artifacts, and a killed stage publishes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from lm_core.config import load_config
from lm_core.shards import read_shard, shard_paths
from lm_core.workspace import Workspace

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

STAGES = ("crawl", "clean", "tokenize", "chunk")


def tiny_config(workspace: Path, *overrides: str):
    return load_config(
        None,
        [
            f"workspace={workspace}",
            "crawl.pydoc=true",
            "crawl.max_pages=25",
            "crawl.max_depth=2",
            "tokenize.vocab_size=600",
            "chunk.seq_len=32",
            "chunk.val_fraction=0.2",
            *overrides,
        ],
    )


def stage_states(flow_run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    stage_runs = [r for r in runs if r.name.split("-")[0] in STAGES and "shard" not in r.name]
    return {r.name.split("-")[0]: r.state.name for r in stage_runs}


def run_data(cfg, **params):
    from flows.data import data_flow, with_runner

    state = with_runner(data_flow, cfg)(config=cfg, return_state=True, **params)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    ws = tmp_path_factory.mktemp("data-flow") / "workspace"
    cfg = tiny_config(ws)
    refs, run_id = run_data(cfg)
    return cfg, refs, run_id


def test_data_flow_publishes_every_stage(first_run):
    cfg, refs, run_id = first_run
    ws = Workspace(cfg.workspace)
    for stage in STAGES:
        ref = getattr(refs, stage)
        assert ws.is_published(stage, ref.fingerprint)
        assert ref.manifest()["stage"] == stage
    assert refs.crawl.stats["rows"] > 5, "the demo site should yield pages"
    assert refs.clean.stats["rows"] > 0
    blocks = read_shard(shard_paths(refs.chunk.dir / "train")[0])
    assert blocks.schema.field("tokens").type == pa.list_(pa.uint16(), 33)
    # the clean stage's inputs are the crawl's fingerprint and what it holds: lineage is on disk
    crawled = {"crawl": refs.crawl.fingerprint, "crawl_content": refs.crawl.stats["content_digest"]}
    assert refs.clean.manifest()["inputs"] == crawled
    assert set(stage_states(run_id).values()) == {"Completed"}


def test_rerun_is_fully_cached(first_run):
    cfg, refs, _ = first_run
    mtimes = {s: (getattr(refs, s).dir / "_manifest.json").stat().st_mtime for s in STAGES}
    t0 = time.time()
    refs2, run_id = run_data(cfg)
    elapsed = time.time() - t0
    assert stage_states(run_id) == {s: "Cached" for s in STAGES}
    assert refs2 == refs
    assert {s: (getattr(refs2, s).dir / "_manifest.json").stat().st_mtime for s in STAGES} == mtimes
    assert elapsed < 60  # generous: a cached rerun does no stage work at all


def test_changed_config_makes_a_new_artifact_and_keeps_the_old(first_run):
    cfg, refs, _ = first_run
    cfg2 = tiny_config(cfg.workspace, "chunk.seq_len=16")
    refs2, run_id = run_data(cfg2)
    assert stage_states(run_id) == {"crawl": "Cached", "clean": "Cached", "tokenize": "Cached", "chunk": "Completed"}
    assert refs2.chunk.fingerprint != refs.chunk.fingerprint
    assert refs.chunk.dir.is_dir() and refs2.chunk.dir.is_dir()


def test_a_deleted_artifact_is_rebuilt_not_served_from_prefects_cache(first_run):
    import shutil

    cfg, refs, _ = first_run
    shutil.rmtree(refs.chunk.dir)
    refs2, run_id = run_data(cfg)
    assert stage_states(run_id)["chunk"] == "Completed"
    assert refs2.chunk.fingerprint == refs.chunk.fingerprint and refs.chunk.dir.is_dir()


def test_force_recomputes_a_cached_stage(first_run):
    from flows.data import with_runner
    from flows.stages import chunk_flow

    cfg, refs, _ = first_run
    before = json.loads((refs.chunk.dir / "_manifest.json").read_text())["created"]
    time.sleep(1.1)
    state = with_runner(chunk_flow, cfg)(config=cfg, force=True, return_state=True)
    ref = state.result()
    assert ref.fingerprint == refs.chunk.fingerprint
    assert ref.manifest()["created"] != before


def test_a_refresh_crawls_again_and_rebuilds_nothing_when_the_pages_are_the_same(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"  # English prose: the project's docs
    shutil.copytree(Path(__file__).resolve().parent.parent / "docs", corpus)
    cfg = tiny_config(tmp_path / "workspace", "crawl.pydoc=false", f"crawl.files=[{{path: '{corpus}'}}]")
    refs, _ = run_data(cfg)

    refreshed, run_id = run_data(cfg, refresh=True)  # what the nightly `data` deployment runs
    assert stage_states(run_id) == {"crawl": "Completed", "clean": "Cached", "tokenize": "Cached", "chunk": "Cached"}
    assert refreshed.crawl.fingerprint != refs.crawl.fingerprint  # a new snapshot, labelled with the run's start
    assert refreshed.crawl.manifest()["inputs"]["snapshot"].endswith("Z")
    assert (refreshed.clean, refreshed.tokenize, refreshed.chunk) == (refs.clean, refs.tokenize, refs.chunk)

    again, run_id = run_data(cfg)  # a run that does not refresh reads the newest snapshot
    assert again.crawl == refreshed.crawl and set(stage_states(run_id).values()) == {"Cached"}


def test_each_refresh_is_its_own_snapshot_and_a_flow_runs_retries_keep_theirs():
    from prefect import flow

    from tasks.stage_task import refresh_label

    @flow
    def labels() -> list[str]:
        return [refresh_label(), refresh_label()]  # a retried crawl task asks again: the same label

    first, second = labels(), labels()  # two refreshes started by hand within a second
    assert first[0] == first[1] and second[0] == second[1]
    assert first[0] != second[0]
    assert refresh_label() != refresh_label()  # outside a flow run: the time of asking


# ----------------------------------------------------------------------------- killed mid-write

KILLABLE_CLEAN = """
import sys
from lm_core.config import load_config
from lm_core.clean.stage import run_clean
from lm_core.workspace import Workspace
ws = Workspace(sys.argv[1])
cfg = load_config(None, ["crawl.files=[{path: x}]"])
run_clean(cfg.clean, ws.resolve("crawl"), ws)
print("done")
"""


def test_a_stage_killed_mid_write_publishes_nothing_and_the_rerun_completes(tmp_path):
    from lm_core.crawl.stage import run_crawl

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    for i in range(1500):  # enough distinct documents that cleaning takes a few seconds
        text = " ".join(words[(i * 7 + j * 3) % len(words)] + str((i * j) % 97) for j in range(120))
        (corpus / f"doc{i:04d}.txt").write_text(f"Document {i}. " + text + ".\n")
    ws_root = tmp_path / "workspace"
    cfg = load_config(None, [f"crawl.files=[{{path: {corpus}, glob: '*.txt'}}]"])
    run_crawl(cfg.crawl, Workspace(ws_root))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_CLEAN, str(ws_root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    clean_dir = ws_root / "clean"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the stage has started writing its partial folder
        partial = list(clean_dir.glob(".partial-*/**/*.arrow")) if clean_dir.is_dir() else []
        if partial:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the stage finished before it could be killed: make the corpus larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    published = [p for p in clean_dir.iterdir() if not p.name.startswith(".")]
    assert published == [], "a killed stage must not publish"

    out = subprocess.run(
        [sys.executable, "-c", KILLABLE_CLEAN, str(ws_root)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    ref = Workspace(ws_root).resolve("clean")
    assert ref.stats["documents_in"] == 1500
    assert not list(clean_dir.glob(".partial-*"))
