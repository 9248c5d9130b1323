"""The data flow's per-shard tasks on a real Dask LocalCluster (and Ray) give the very bytes the
thread runner gives, under the same fingerprints.

pydoc's pages hold memory addresses that differ per server run, so the site is crawled once; the
other workspaces start from a copy of that crawl artifact (the crawl stage then finds it published).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from test_data_flow import STAGES, tiny_config

from lm_core.shards import shard_paths
from lmforge.embedded import EmbeddedServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

# several crawl shards, so the clean and tokenize stages fan out over several tasks
SHARDED = ("crawl.docs_per_shard=4", "clean.docs_per_shard=4")
VOLATILE = {"created", "seconds", "versions", "origin"}  # origin: the flow run that built it


def run_data(cfg):
    from flows.data import data_flow, with_runner

    state = with_runner(data_flow, cfg)(config=cfg, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def shard_task_runs(flow_run_id) -> dict[str, int]:
    """The flow run's per-shard task runs that completed, counted by stage."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    counts: dict[str, int] = {}
    for r in runs:
        if "-shard-" in r.name and r.state.is_completed():
            stage = r.name.split("-")[0]
            counts[stage] = counts.get(stage, 0) + 1
    return counts


def stable(value):
    """A manifest without what differs between two identical builds: timestamps and timings."""
    if isinstance(value, dict):
        return {
            k: stable(v) for k, v in value.items() if k not in VOLATILE and "seconds" not in k and "per_second" not in k
        }
    return value


def artifact_files(artifact_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(artifact_dir)): p.read_bytes()
        for p in sorted(artifact_dir.rglob("*"))
        if p.is_file() and p.name != "_manifest.json"
    }


@pytest.fixture(scope="module")
def prefect_api():
    """A Prefect server, as `lmforge` starts it: Dask and Ray workers are told its address. (With
    Prefect's in-process ephemeral API, each worker process would start an API of its own.)"""
    server = EmbeddedServer(Path(os.environ["PREFECT_HOME"]))
    try:
        server.wait()
        with server.settings():
            yield server.api_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def threads_run(prefect_api, tmp_path_factory):
    ws = tmp_path_factory.mktemp("threads") / "workspace"
    cfg = tiny_config(ws, *SHARDED, "runner.kind=threads")
    refs, _ = run_data(cfg)
    return cfg, refs


def run_on(kind: str, tmp_path: Path, threads_run, *overrides: str):
    cfg, refs = threads_run
    ws = tmp_path / "workspace"
    shutil.copytree(refs.crawl.dir, ws / "crawl" / refs.crawl.fingerprint)
    return run_data(tiny_config(ws, *SHARDED, f"runner.kind={kind}", *overrides))


def assert_same_artifacts(refs, other):
    assert len(shard_paths(refs.crawl.dir / "docs")) >= 3, "the crawl should be split into several shards"
    for stage in STAGES:
        a, b = getattr(refs, stage), getattr(other, stage)
        assert a.fingerprint == b.fingerprint, f"{stage}: the runner must not change the fingerprint"
        files_a, files_b = artifact_files(a.dir), artifact_files(b.dir)
        assert sorted(files_a) == sorted(files_b), stage
        assert any(name.endswith(".arrow") for name in files_a), stage
        for name in files_a:
            assert files_a[name] == files_b[name], f"{stage}/{name} differs between runners"
        assert stable(a.manifest()) == stable(b.manifest()), stage


@pytest.mark.parametrize("kind, integration", [("dask", "prefect_dask"), ("ray", "prefect_ray")])
def test_a_local_cluster_gives_byte_identical_artifacts(threads_run, tmp_path, kind, integration):
    pytest.importorskip(integration)
    other, flow_run_id = run_on(kind, tmp_path, threads_run, "runner.max_workers=2")
    _, refs = threads_run
    assert_same_artifacts(refs, other)
    # every shard ran as its own task run on the cluster, recorded in Prefect (clean maps twice:
    # filter, then write)
    n_jobs = -(-refs.clean.stats["documents_in"] // 4)  # clean.docs_per_shard documents to a task
    n_clean = len(shard_paths(refs.clean.dir / "docs"))
    assert shard_task_runs(flow_run_id) == {"clean": 2 * n_jobs, "tokenize": n_clean}
