"""`lmforge server`: a Prefect server and an MLflow tracking server on one machine.

Both are child processes bound to 127.0.0.1, each in its own process group so that
stopping one also stops the workers it spawned (uvicorn, gunicorn), and each under a guard that
stops that group once `lmforge server` is gone, even killed outright (`lmforge/process.py`).
Their ports are checked first: a port in use fails before anything starts, naming what holds it.
By default both serve the workspace's own stores: Prefect's SQLite database in `PREFECT_HOME`
(where embedded runs were recorded) and MLflow's `sqlite:///<workspace>/mlflow.db`, with artifacts
in `mlartifacts/` beside it, where `lm_core.tracking.artifact_location` puts them. Database URLs
travel in environment variables, never on a command line (where `ps` would show a password), and
are printed masked.
While they run, `lmforge-server.json` in the Prefect home tells lmforge commands on this workspace
to send their runs to this Prefect server instead of starting an embedded one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psutil

from lm_core.mlflow_store import ensure_store
from lm_core.mlflow_ui import TRAINING_VIEW
from lm_core.secrets import mask_url  # re-exported: the CLI prints URLs with it
from lmforge.embedded import announce_server
from lmforge.process import guarded

START_TIMEOUT_S = 180  # a fresh Prefect database migrates on its first start: slow on a small machine
STOP_TIMEOUT_S = 15

# A run whose process died without a word (SIGKILL, the OOM killer, a machine lost) would show as
# Running for good. Its flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
# (180 by default); this automation marks one Crashed once no heartbeat and no final state came
# for UNRESPONSIVE_BEATS of those. (Prefect's own recipe; Prefect Cloud has it built in.)
UNRESPONSIVE_RUNS = "lmforge: crash unresponsive runs"
UNRESPONSIVE_BEATS = 3


class ServerError(RuntimeError):
    pass


def prefect_database_url(postgres: str) -> str:
    """A PostgreSQL URL in the asyncpg dialect Prefect's server needs."""
    scheme, sep, rest = postgres.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ServerError(f"not a PostgreSQL URL: {mask_url(postgres)} (expected postgresql://user:password@host/db)")
    return f"postgresql+asyncpg://{rest}"


TRACKING_TIMEOUT_S = 10  # a tracking server that does not answer within this is down for the command


def check_tracking_server(uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> None:
    """Fail at once, with a ServerError naming the server (never its password) and the fix, when
    `uri` is an MLflow tracking server (http or https) that cannot be reached or refuses lmforge's
    credentials: MLflow's own client would retry for about four minutes, then show a traceback.
    Its credentials are MLflow's (`MLFLOW_TRACKING_USERNAME`/`PASSWORD`, see lm_core/secrets.py)."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx  # only for a tracking server: not every command's start-up

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    shown = mask_url(uri)
    try:
        reply = httpx.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(user, password or "") if user else None,
            timeout=timeout_s,
            verify=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true",
        )
    except httpx.HTTPError as e:
        reason = mask_url(str(e)) or type(e).__name__
        raise ServerError(
            f"cannot reach the MLflow tracking server at {shown} ({reason}): start it (`lmforge server` "
            "starts one on 127.0.0.1:5000), or set tracking.tracking_uri to one that runs "
            "(leave it unset for the workspace's own mlflow.db)"
        ) from None
    if reply.status_code in (401, 403):
        raise ServerError(
            f"the MLflow tracking server at {shown} refused the credentials (HTTP {reply.status_code}): "
            "give them in tracking.tracking_uri (http://user:password@host:port) or in "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )


def artifacts_destination(backend_uri: str, workspace: Path) -> str:
    """Where the MLflow server keeps artifacts it receives: beside a SQLite store (as the
    embedded runs do), else in the workspace's `mlartifacts/`."""
    if backend_uri.startswith("sqlite:///"):
        return str(Path(backend_uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return str(Path(workspace).resolve() / "mlartifacts")


def crash_unresponsive_runs(api_url: str, after_s: float | None = None) -> float | None:
    """Have the Prefect server at `api_url` mark a flow run Crashed once it has sent no heartbeat
    and no final state for `after_s` seconds (default: UNRESPONSIVE_BEATS heartbeats), through
    the automation UNRESPONSIVE_RUNS, which replaces the one an earlier call made. Returns
    `after_s`, or None where heartbeats are off (PREFECT_FLOWS_HEARTBEAT_FREQUENCY unset)."""
    from prefect.automations import Automation  # Prefect: once PREFECT_HOME is set
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    beat_s = get_current_settings().flows.heartbeat_frequency  # what commands here send
    if beat_s is None:
        return None
    after_s = after_s or UNRESPONSIVE_BEATS * beat_s
    if after_s <= beat_s:
        raise ServerError(
            f"runs would be marked crashed between two heartbeats: {after_s:g} s is not longer "
            f"than PREFECT_FLOWS_HEARTBEAT_FREQUENCY ({beat_s} s)"
        )
    final = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")]
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(UNRESPONSIVE_RUNS):
                client.delete_automation(old.id)
        Automation(
            name=UNRESPONSIVE_RUNS,
            description=f"A flow run with no heartbeat and no final state for {after_s:g} s is marked Crashed.",
            trigger=EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *final},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=after_s),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=f"no heartbeat for {after_s:g} s: the process running it is gone",
                )
            ],
        ).create()
    return after_s


def port_free(port: int, for_what: str, option: str, host: str = "127.0.0.1") -> None:
    """Raise a ServerError naming the port, and what holds it where that can be found, when `port`
    cannot be bound on `host` (as the servers bind it: SO_REUSEADDR, so a closed connection's
    TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return
        except OSError as e:
            reason = e.strerror or str(e)
    holder = port_holder(port)
    raise ServerError(
        f"port {port} on {host}, for {for_what}, is in use ({reason}){f' by {holder}' if holder else ''}: "
        f"stop it, or pick another port with {option}"
    )


def port_holder(port: int) -> str | None:
    """'pid 123 (command line)' of the process listening on TCP `port`, where it can be found."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())
                return f"pid {conn.pid} ({cmd[:160]})" if cmd else f"pid {conn.pid}"
    except Exception:  # no permission to see other users' sockets: say what we can
        return None
    return None


@dataclass
class Child:
    name: str
    port: int
    argv: list[str]
    health_url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                guarded(self.argv),  # stopped with this process, however it ends
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: we stop it, not the terminal's Ctrl-C
            )

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(self.health_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


class Servers:
    """The Prefect server and the MLflow server, started together and stopped together."""

    def __init__(
        self,
        workspace: Path,
        prefect_home: Path,
        mlflow_backend: str,
        prefect_port: int = 4200,
        mlflow_port: int = 5000,
        postgres: str | None = None,
    ):
        self.workspace = Path(workspace).resolve()
        self.prefect_home = Path(prefect_home).resolve()
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        self.mlflow_backend = mlflow_backend
        self.postgres = postgres
        self._announcement: Path | None = None
        self.prefect_url = f"http://127.0.0.1:{prefect_port}"
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        base = {
            **os.environ,
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PREFECT_HOME": str(self.prefect_home),
        }
        base.pop("PREFECT_API_URL", None)  # the server is not a client of another server
        prefect_env = {**base, "PREFECT_UI_API_URL": f"{self.prefect_url}/api"}
        if postgres:
            prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_database_url(postgres)
        mlflow_env = {
            **base,
            "MLFLOW_BACKEND_STORE_URI": mlflow_backend,
            "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination(mlflow_backend, self.workspace),
        }
        bin_dir = Path(sys.executable).parent
        self.children = [
            Child(
                "prefect",
                prefect_port,
                [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                f"{self.prefect_url}/api/health",
                prefect_env,
                self.prefect_home / "prefect-server.log",
            ),
            Child(
                "mlflow",
                mlflow_port,
                [
                    str(bin_dir / "mlflow"),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                    "--workers",
                    "1",
                ],
                f"{self.mlflow_url}/health",
                mlflow_env,
                self.prefect_home / "mlflow-server.log",
            ),
        ]

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children if c.process is not None]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start both and block until both answer their health checks; stop both on failure.
        A port in use fails first, starting nothing: else the other server there would answer
        the health check, and ours would die on its busy port a moment later."""
        self.check_ports()
        ensure_store(self.mlflow_backend)  # a new SQLite store whole before MLflow opens it (a kill can't half-make it)
        for c in self.children:
            c.start()
        deadline = time.monotonic() + timeout_s
        waiting = list(self.children)
        try:
            while waiting:
                for c in list(waiting):
                    if c.process.poll() is not None:
                        raise ServerError(
                            f"the {c.name} server exited with code {c.process.returncode}; see {c.log_path}"
                        )
                    if c.healthy():
                        waiting.remove(c)
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in waiting)
                    raise ServerError(
                        f"no answer from {names} in {timeout_s:.0f} s; see the logs in {self.prefect_home}"
                    )
                if waiting:
                    time.sleep(0.25)
            # lmforge commands on this workspace now send their runs here rather than start their own
            self._announcement = announce_server(
                self.prefect_home, f"{self.prefect_url}/api", self.mlflow_url, self.mlflow_backend
            )  # and the MLflow UI showing the runs of its store, which the Prefect UI's artifacts link to
        except BaseException:
            self.stop()
            raise

    def check_ports(self) -> None:
        """A ServerError naming the first port that is taken (both the same one included)."""
        if self.children[0].port == self.children[1].port:
            raise ServerError(f"the Prefect and MLflow servers cannot share port {self.children[0].port}")
        for c in self.children:
            port_free(c.port, f"the {c.name} server", f"--{c.name}-port")

    def wait(self) -> str | None:
        """Block while both run; the name of the first one that exits on its own, if any."""
        while True:
            for c in self.children:
                if c.process is not None and c.process.poll() is not None:
                    return c.name
            time.sleep(0.5)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to each process group, wait, then SIGKILL whatever is left."""
        if self._announcement is not None:
            self._announcement.unlink(missing_ok=True)
            self._announcement = None
        for c in self.children:
            if c.process is not None and c.process.poll() is None:
                c.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for c in self.children:
            if c.process is None:
                continue
            try:
                c.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.signal_group(signal.SIGKILL)
                c.process.wait()
            c.signal_group(signal.SIGKILL)  # workers the server left behind in its group
            c.process = None

    def describe(self) -> dict[str, str]:
        """What to print: the UIs, and the environment that points runs at them."""
        return {
            "Prefect UI": self.prefect_url,
            "Prefect database": mask_url(self.postgres) if self.postgres else str(self.prefect_home / "prefect.db"),
            "MLflow UI": f"{self.mlflow_url}/#/experiments?{TRAINING_VIEW}",  # not its GenAI view
            "MLflow backend": mask_url(self.mlflow_backend),
            "PREFECT_API_URL": f"{self.prefect_url}/api",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
        }
