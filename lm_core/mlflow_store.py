"""The workspace's MLflow SQLite store, created whole or not at all.

MLflow builds a new SQLite store in place: it creates the tables, then runs its schema
migrations, one statement at a time, for about a second. A process killed in that second leaves a
database that every later MLflow call refuses (`table _alembic_tmp_experiments already exists`).
So a missing store is built here at a temporary path in the same folder and linked into place
once migrated: the store's path holds a whole store or nothing. A store left half-migrated by an
older lmforge (or by MLflow itself) is rebuilt when it holds nothing; one that holds runs is
named with the way out, and left as it is.

    ensure_store(tracking_uri)    before the first MlflowClient on a workspace's store
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from lm_core.workspace import ArtifactError

log = logging.getLogger(__name__)

_SQLITE = "sqlite:///"
_MIGRATION_TABLE = "_alembic_tmp_"  # alembic's copy of a table while it alters it (SQLite batch mode)


class MlflowStoreError(ArtifactError):
    """A tracking store that MLflow cannot open and that lmforge will not rebuild (it holds runs)."""


@dataclass
class _StoreState:
    tables: set[str]
    version: str | None  # alembic's schema revision; None before the first migration finished
    records: int  # runs, registered models and experiments other than MLflow's "Default"

    @property
    def interrupted_migration(self) -> str | None:
        """The table an interrupted migration left behind, if any."""
        return next((t for t in sorted(self.tables) if t.startswith(_MIGRATION_TABLE)), None)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` store; None for a server, another database or memory."""
    if not tracking_uri.startswith(_SQLITE):
        return None
    path = tracking_uri.removeprefix(_SQLITE).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def ensure_store(tracking_uri: str) -> None:
    """Make sure the SQLite store of `tracking_uri` exists whole: build it atomically when it is
    missing, rebuild it when an interrupted creation left it half-migrated and it holds nothing.
    Anything but a `sqlite:///` file store is left to MLflow. Cheap when the store is whole
    (a read of SQLite's table list); raises MlflowStoreError for a broken store that holds runs."""
    path = sqlite_path(tracking_uri)
    if path is None or (path.is_file() and _problem(path) is None):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others find its store
        for leftover in path.parent.glob(f".{path.name}.*.building*"):  # builders killed mid-way (and their journals)
            leftover.unlink(missing_ok=True)
        if path.is_file():
            problem = _problem(path)
            if problem is None:
                return
            log.warning("rebuilding the MLflow store %s: %s, and it holds no runs", path, problem)
            path.unlink()
        _build(path)


def _problem(path: Path) -> str | None:
    """Why the store at `path` cannot be used as it is, or None when it can. Raises
    MlflowStoreError when it cannot and holds records (rebuilding would lose them)."""
    state = _inspect(path)
    problem = None
    if (table := state.interrupted_migration) is not None:
        problem = f"an interrupted schema migration left the table {table}"
    elif state.version is None:
        problem = "its schema was never completed (no alembic_version)"
    elif state.records == 0 and state.version != _latest_revision():
        # An empty store behind the schema: a creation killed between two migrations. A store
        # with runs at an older schema is MLflow's to judge (it says to run `mlflow db upgrade`).
        problem = f"its schema stopped at revision {state.version}"
    if problem and state.records:
        raise MlflowStoreError(
            f"the MLflow store {path} cannot be opened: {problem}; it holds {state.records} runs, models "
            f"or experiments, so lmforge leaves it as it is. Back it up, then repair it: drop the table "
            f"named (if any) and run `mlflow db upgrade {_SQLITE}{path}`"
        )
    return problem


def _inspect(path: Path) -> _StoreState:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "alembic_version" in tables:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                version = row[0] if row else None
            records = 0
            for table, where in (("runs", ""), ("registered_models", ""), ("experiments", " WHERE experiment_id != 0")):
                if table in tables:
                    records += con.execute(f"SELECT COUNT(*) FROM {table}{where}").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:  # not a database at all (a torn or foreign file)
        if path.stat().st_size == 0:
            return _StoreState(set(), None, 0)
        raise MlflowStoreError(f"the MLflow store {path} is not a readable SQLite database: {e}") from None
    return _StoreState(tables, version, records)


def _latest_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision  # MLflow: only to judge an empty store

    return _get_latest_schema_revision()


def _build(path: Path) -> None:
    """Create a store with MLflow's own migrations at a temporary path beside `path`, then link it
    into place (a link never replaces a store that another process put there first)."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine  # MLflow: only to build

    tmp = path.with_name(f".{path.name}.{os.getpid()}.building")
    tmp.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine(f"{_SQLITE}{tmp}")
    try:
        _initialize_tables(engine)  # MLflow's tables and every migration, as its own stores do
    finally:
        engine.dispose()
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
