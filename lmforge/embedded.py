"""Prefect's embedded API for one `lmforge` command, started the moment the command starts.

Prefect's own ephemeral server (`SubprocessASGIServer`) starts only when the first flow runs,
and the parent must import Prefect's whole server package (seconds) just to launch it. Here
the same uvicorn command is launched before anything heavy is imported, so the server boots
while the flows import; the flows then talk to it as to any server. (Importing the stages' torch
and MLflow too while it boots made a cached `lmforge run` 2.3 s slower on 2 busy cores, and a
run that needs them no faster: the imports and the server compete for the same cores.)

With PREFECT_API_URL set (a running `prefect server`), nothing is started; nor while `lmforge
server` serves this workspace's Prefect home (it says so in `lmforge-server.json` there): runs
go to that server.

The app is Prefect's own, wrapped to retry SQLite lock conflicts inside the server (see
`embedded_app.py`): without it a conflict costs the flow a 2-second client backoff.

The server lives as long as its command: the command holds the server's stdin, and the server
shuts down once that closes, when `stop` closes it or when the command is gone however it ended
(a `kill -9` leaves no server behind). A command leaves once the server has recorded its runs
(`settings`), without waiting for the server's own shutdown.

Flow-run heartbeats are turned off against this server: they exist so a long-lived server can
detect crashed runs, and this one lives exactly as long as the run (each heartbeat thread also
costs up to a second to stop, per subflow).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from lm_core.mlflow_ui import MLFLOW_UI_ENV
from lm_core.secrets import mask_url

START_TIMEOUT_S = 300  # the first start migrates a fresh database: slow on a small machine


class EmbeddedServerError(RuntimeError):
    pass


class EmbeddedServer:
    def __init__(self, prefect_home: Path):
        self.process: subprocess.Popen | None = None
        self.api_url: str | None = None
        self._migration_lock: int | None = None
        self.home = Path(prefect_home)
        self.mlflow_ui = announced_mlflow(self.home)  # links to MLflow point at it while it runs
        if os.environ.get("PREFECT_API_URL"):
            return  # a real server is configured
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_url = announced_server(self.home)
        if self.api_url is not None:
            return  # `lmforge server` serves this home: runs go to it, and show in its UI as they happen
        self.log_path = self.home / "embedded-server.log"
        self._migrated_stamp = self.home / f".migrated-prefect-{metadata.version('prefect')}"
        if not self._migrated():
            # two commands starting at once on a fresh database would both migrate it and one
            # would die on "index already exists": the first migrates, the others wait for it
            self._migration_lock = os.open(self.home / ".migrate.lock", os.O_CREAT | os.O_RDWR)
            fcntl.flock(self._migration_lock, fcntl.LOCK_EX)
            if self._migrated():
                self._release_migration_lock()
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env["PREFECT_HOME"] = str(self.home)  # its database is the one this home's stamp speaks of
        if self._migrated():
            # migrated by this version already, and its block types registered then: skip both
            # (registration first imports every installed Prefect collection, Ray's included)
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
            env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
            env["PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION"] = "false"
        env[EXIT_WITH_STDIN] = "1"  # this process holds the server's stdin open: it stops once that closes
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "lmforge.embedded_app:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=log, stderr=log, stdin=subprocess.PIPE,
            )  # fmt: skip

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def wait(self) -> None:
        """Block until the server answers its health check."""
        if self.process is None:
            return
        try:
            self._wait_healthy()
        finally:
            self._release_migration_lock()

    def _wait_healthy(self) -> None:
        import httpx  # 0.07 s: for the commands that orchestrate, not every command

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"Prefect's embedded server exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1.0).status_code == 200:
                    self._migrated_stamp.touch()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(
            f"Prefect's embedded server did not start in {START_TIMEOUT_S} s; see {self.log_path}"
        )

    def _migrated(self) -> bool:
        return self._migrated_stamp.is_file() and (self.home / "prefect.db").is_file()

    def _release_migration_lock(self) -> None:
        if self._migration_lock is not None:
            os.close(self._migration_lock)  # closing the descriptor releases the flock
            self._migration_lock = None

    @contextmanager
    def settings(self):
        """Prefect settings that point the flows at this server, for the duration of a call; and
        the MLflow UI that `lmforge server` runs, for the links the stages make to it."""
        with _mlflow_ui_known(self.mlflow_ui):
            if self.api_url is None:
                yield
                return
            from prefect.settings import (
                PREFECT_API_URL,
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                PREFECT_UI_URL,
                temporary_settings,
            )

            updates = {PREFECT_API_URL: self.api_url}
            if self.started_here:
                # heartbeats off for this short-lived server only: `lmforge server` watches them
                updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
                # it has no UI, and is gone once the command ends: no "View at" link to a dead page
                updates[PREFECT_UI_URL] = ""
            started = datetime.now(UTC)
            with temporary_settings(updates=updates):
                try:
                    yield
                finally:
                    _drain_events()
                    if self.started_here:  # about to be stopped: let it record what it was sent
                        _wait_for_task_runs_recorded(started)

    def stop(self, wait: bool = True) -> None:
        """Tell the server to stop, by closing its stdin; with `wait`, until it has exited (killed
        after 10 s). Without, it shuts down on its own: it has already recorded what it was sent
        (`settings`), and what is left (stopping its services) takes a command's last 0.2 s."""
        self._release_migration_lock()
        if self.process is None:
            return
        process, self.process = self.process, None
        process.stdin.close()
        if not wait:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Set in the embedded server's environment: it shuts down once its stdin closes, which happens when
# `stop` closes it and also when the command is gone however it ended (killed, crashed), so no
# server is left running without its command (lmforge/embedded_app.py).
EXIT_WITH_STDIN = "LMFORGE_EXIT_WITH_STDIN"

# `lmforge server` writes this file into the Prefect home it serves, while it runs.
ANNOUNCEMENT = "lmforge-server.json"


def announce_server(home: Path, api_url: str, mlflow_url: str | None = None, mlflow_store: str | None = None) -> Path:
    """Say that this process serves `home`'s database at `api_url` (and the MLflow store
    `mlflow_store`, its password masked, with its UI at `mlflow_url`); returns the file to remove."""
    path = Path(home) / ANNOUNCEMENT
    tmp = path.with_name(f".{ANNOUNCEMENT}.{os.getpid()}")
    info = {"prefect_api_url": api_url, "pid": os.getpid()}
    if mlflow_url and mlflow_store:
        info |= {"mlflow_url": mlflow_url, "mlflow_store": mask_url(mlflow_store)}
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def announced_server(home: Path) -> str | None:
    """The API URL of the `lmforge server` serving `home`, if one is running and answers."""
    info = _announcement(home)
    url = str(info.get("prefect_api_url", "")) if info else ""
    return url if url and _answers(f"{url}/health") else None


def announced_mlflow(home: Path) -> dict[str, str] | None:
    """{"store": tracking URI, "url": its UI} of the MLflow server that the `lmforge server` of
    `home` runs, if it runs and answers."""
    info = _announcement(home)
    store, url = (str(info.get("mlflow_store", "")), str(info.get("mlflow_url", ""))) if info else ("", "")
    return {"store": store, "url": url} if store and url and _answers(f"{url}/health") else None


def _announcement(home: Path) -> dict | None:
    try:
        info = json.loads((Path(home) / ANNOUNCEMENT).read_text())
        os.kill(int(info["pid"]), 0)  # gone (a server killed without cleaning up): not there
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _answers(url: str) -> bool:
    import httpx  # 0.07 s: only when a server's file is found

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _mlflow_ui_known(served: dict[str, str] | None):
    """MLFLOW_UI_ENV set to `served` (lm_core/mlflow_ui.py reads it) for the duration, when given."""
    if served is None:
        yield
        return
    before = os.environ.get(MLFLOW_UI_ENV)
    os.environ[MLFLOW_UI_ENV] = json.dumps(served)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MLFLOW_UI_ENV, None)
        else:
            os.environ[MLFLOW_UI_ENV] = before


def _wait_for_task_runs_recorded(since: datetime, timeout_s: float = 10.0) -> None:
    """Wait until the server has recorded the final state of every task run of the flow runs
    that started since `since` and have ended. Task runs reach the server as events, which its
    task-run recorder writes a moment later (retrying when SQLite is busy): stopping the server
    before then would lose the last stages' states from the UI's history."""
    try:
        from prefect.client.orchestration import get_client  # Prefect: once PREFECT_HOME is set
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterStartTime

        deadline = time.monotonic() + timeout_s
        seen = None
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
            ended = [r.id for r in runs if r.state is not None and r.state.is_final()]
            while ended and time.monotonic() < deadline:
                tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ended)))
                now = sorted((str(t.id), t.state_name or "") for t in tasks)
                if now == seen and all(t.state is not None and t.state.is_final() for t in tasks):
                    return  # all final, and nothing arrived since the last look
                seen = now
                time.sleep(0.1)
    except Exception:  # the history is a convenience for the UI; never fail a finished run over it
        pass


def _drain_events() -> None:
    """Send the events still queued (task and flow run events) while the server is up."""
    try:
        from prefect.events.worker import EventsWorker  # Prefect: once PREFECT_HOME is set

        EventsWorker.drain_all(timeout=5)
    except Exception:  # events are a convenience for the UI; never fail a run over them
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
