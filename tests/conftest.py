"""Test environment: Prefect's embedded API with its home (database, results) in a temporary
folder of this session, telemetry off. Set before anything imports Prefect."""

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="lmforge-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Prefect's own ephemeral server (flows called in-process) waits 20 s for its start by default;
# beside the other xdist worker on 2 busy cores a start took longer in CI
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.pop("PREFECT_API_URL", None)  # never a real server unless a test starts one
os.environ.pop("LMFORGE_WORKSPACE", None)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


# `./forge test` hands whole files to two workers (xdist's loadfile), the next file to whichever
# is free. xdist orders files by their number of tests, so the server files (few tests, minutes
# each) came last and ran alone at the end. Longest first evens out the end (`./forge test` passes
# --no-loadscope-reorder to keep this order); the weights are rough seconds per test, by marker.
_SECONDS_BY_MARKER = (("server", 30.0), ("slow", 8.0), ("prefect", 3.0))


def _estimated_seconds(item: pytest.Item) -> float:
    return next((s for name, s in _SECONDS_BY_MARKER if item.get_closest_marker(name)), 0.5)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def file_of(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    per_file: dict[str, float] = {}
    for item in items:
        per_file[file_of(item)] = per_file.get(file_of(item), 0.0) + _estimated_seconds(item)
    items.sort(key=lambda item: -per_file[file_of(item)])  # stable: a file's own order kept
