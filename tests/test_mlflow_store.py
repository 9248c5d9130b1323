"""The workspace's MLflow store is created whole or not at all: a process killed while creating it
never leaves a store that fails later; a half-migrated store left by an older lmforge is rebuilt
when empty, and named (and left alone) when it holds runs."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from mlflow import MlflowClient
from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision
from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

from lm_core.mlflow_store import MlflowStoreError, ensure_store

REPO = Path(__file__).parent.parent

CREATE_STORE = """
import sys, time
import mlflow.store.db.utils  # imported before the signal: the kill lands in the store's creation
from lm_core.mlflow_store import ensure_store
print("start", flush=True)
t0 = time.perf_counter()
ensure_store(sys.argv[1])
print(time.perf_counter() - t0, flush=True)
"""


def usable(uri: str) -> None:
    """What a later lmforge run does with the store: open it, record a run with a metric."""
    ensure_store(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e{time.monotonic_ns()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 1.0, step=1)
    assert client.get_metric_history(run.info.run_id, "loss")[0].value == 1.0


def whole_or_absent(db: Path) -> bool:
    if not db.exists():
        return False
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()
    assert not any(t.startswith("_alembic_tmp_") for t in tables) and version == _get_latest_schema_revision()
    return True


def test_a_kill_while_the_store_is_created_never_leaves_a_store_that_fails(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}

    def creator(db: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", CREATE_STORE, f"sqlite:///{db}"], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "start"
        return proc

    timing = creator(tmp_path / "timing.db")  # how long a creation takes on this machine, now
    build_s = float(timing.stdout.readline())
    timing.wait()
    rng, absent = random.Random(0), 0
    for i in range(6):
        db = tmp_path / f"ws{i}" / "mlflow.db"
        proc = creator(db)
        time.sleep(rng.uniform(0, build_s))  # anywhere in the creation
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        absent += not whole_or_absent(db)  # the store's path holds a whole store or nothing
        usable(f"sqlite:///{db}")
        assert whole_or_absent(db)
        assert not [p.name for p in db.parent.iterdir() if p.name.endswith(".building")]
    assert absent >= 1, f"no kill landed inside the creation ({build_s:.2f} s)"


def half_migrated(db: Path, runs: int = 0) -> None:
    """A store as a kill during MLflow's own in-place creation leaves it (or, with `runs`, an
    interrupted `mlflow db upgrade`): alembic's temporary copy of a table left behind and, for an
    empty store, the migrations stopped part-way."""
    uri = f"sqlite:///{db}"
    if runs:
        client = MlflowClient(uri)
        for _ in range(runs):
            client.create_run("0")
    else:
        engine = sqlalchemy.create_engine(uri)
        InitialBase.metadata.create_all(engine)
        config = _get_alembic_config(uri)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0a8213491aaa")  # an early revision: most migrations still to run
        engine.dispose()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER, name TEXT)")
    con.commit()
    con.close()


def test_an_empty_half_migrated_store_from_an_older_version_is_rebuilt(tmp_path):
    db = tmp_path / "mlflow.db"
    half_migrated(db)
    before = subprocess.run(  # what every later run met before (a process of its own: MLflow caches engines)
        [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}').search_experiments()"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert before.returncode != 0 and "table _alembic_tmp_experiments already exists" in before.stderr
    usable(f"sqlite:///{db}")
    assert whole_or_absent(db)


def test_a_half_migrated_store_that_holds_runs_is_named_and_left_alone(tmp_path):
    db = tmp_path / "mlflow.db"
    half_migrated(db, runs=2)
    before = db.read_bytes()
    with pytest.raises(MlflowStoreError, match=f"{db}.*_alembic_tmp_experiments.*holds 2 runs.*mlflow db upgrade"):
        ensure_store(f"sqlite:///{db}")
    assert db.read_bytes() == before


def test_stores_that_are_not_sqlite_files_are_left_to_mlflow(tmp_path):
    for uri in ("http://127.0.0.1:5000", "postgresql://u@h/db", "sqlite:///:memory:"):
        ensure_store(uri)  # nothing to create, nothing contacted
    assert list(tmp_path.iterdir()) == []
