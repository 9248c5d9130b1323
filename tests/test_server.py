"""`lmforge server`: a real Prefect server and a real MLflow server, started and stopped together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from lmforge.embedded import ANNOUNCEMENT, announce_server, announced_server, free_port
from lmforge.server import artifacts_destination, mask_url, prefect_database_url

LMFORGE = str(Path(sys.executable).parent / "lmforge")


def test_passwords_are_masked_and_postgres_urls_get_prefects_driver():
    url = "postgresql://lmforge:s3cr:et@db.internal:5432/prefect"
    assert mask_url(url) == "postgresql://lmforge:***@db.internal:5432/prefect"
    assert mask_url("sqlite:////tmp/ws/mlflow.db") == "sqlite:////tmp/ws/mlflow.db"
    assert mask_url("postgresql://lmforge@db/prefect") == "postgresql://lmforge@db/prefect"  # no password
    assert prefect_database_url(url) == "postgresql+asyncpg://lmforge:s3cr:et@db.internal:5432/prefect"
    with pytest.raises(RuntimeError, match=r"not a PostgreSQL URL: mysql://me:\*\*\*@db/x"):
        prefect_database_url("mysql://me:pw@db/x")


def test_mlflow_artifacts_go_beside_a_sqlite_store_as_embedded_runs_do(tmp_path):
    from lm_core.tracking import artifact_location

    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    # the server's destination is the parent of where embedded runs put an experiment's artifacts
    assert Path(artifact_location(uri, "exp").removeprefix("file://")).parent == Path(artifacts_destination(uri, "x"))
    assert artifacts_destination("postgresql://u@db/m", tmp_path / "ws") == str(tmp_path / "ws" / "mlartifacts")


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = log.read_text()
        if text in out:
            return out
        assert proc.poll() is None, f"lmforge server exited with {proc.returncode}:\n{out}"
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} after {timeout_s} s:\n{log.read_text()}")


def start_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """`lmforge server` on free ports with its workspace in tmp_path: (process, log, Prefect URL, MLflow URL)."""
    prefect_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("PREFECT_HOME")  # the server's home is the workspace's own, as for embedded runs
    log = tmp_path / "server.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [LMFORGE, "server", "--set", f"workspace={tmp_path / 'ws'}", *args]
            + ["--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return proc, log, f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"


def kill_with_its_servers(proc: subprocess.Popen) -> None:
    """Kill `lmforge server` and the servers under it (after a failed test): they run in sessions of
    their own, which a kill of the parent alone leaves running, and serving, for good."""
    if proc.poll() is not None:
        return
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.kill()
    proc.wait()


def stop_with_ctrl_c(proc: subprocess.Popen, log: Path, prefect_url: str, mlflow_url: str) -> None:
    """SIGINT, as Ctrl-C sends: exit 0, both servers and their workers gone, both ports closed."""
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert "stopped" in log.read_text()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    for url in (f"{prefect_url}/api/health", f"{mlflow_url}/health"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)


@pytest.mark.slow
@pytest.mark.server
def test_server_serves_both_uis_and_ctrl_c_stops_both(tmp_path):
    ws = tmp_path / "ws"
    proc, log, prefect_url, mlflow_url = start_server(tmp_path)
    try:
        printed = wait_for_line(proc, log, "Ctrl-C stops both", timeout_s=240)
        assert f"PREFECT_API_URL={prefect_url}/api" in printed and mlflow_url in printed
        assert httpx.get(f"{prefect_url}/api/health").json() is True
        assert httpx.get(f"{mlflow_url}/health").text == "OK"
        assert (ws / ".prefect" / "prefect.db").is_file(), "Prefect serves the workspace's database"

        # lmforge commands on this workspace now record their runs in this server, starting none
        from prefect import flow

        from lmforge.embedded import EmbeddedServer

        @flow(name="while-lmforge-server-runs")
        def a_flow() -> int:
            return 42

        embedded = EmbeddedServer(ws / ".prefect")
        assert embedded.api_url == f"{prefect_url}/api" and not embedded.started_here
        with embedded.settings():
            state = a_flow(return_state=True)
        run = httpx.get(f"{prefect_url}/api/flow_runs/{state.state_details.flow_run_id}").json()
        assert run["state"]["type"] == "COMPLETED"

        # a run logged through the server keeps its artifacts beside the workspace's mlflow.db
        from mlflow import MlflowClient

        client = MlflowClient(mlflow_url)
        run = client.create_run(client.create_experiment("through-the-server"))
        client.log_text(run.info.run_id, "hello", "note.txt")
        assert [p.read_text() for p in (ws / "mlartifacts").rglob("note.txt")] == ["hello"]
        assert (ws / "mlflow.db").is_file()

        # the Prefect UI's register-decision artifact links to that run's page in the MLflow UI
        from lm_core.mlflow_ui import TRAINING_VIEW, mlflow_links

        links = mlflow_links(mlflow_url, run.info.run_id, "lmforge-demo", 3)
        exp, run_id = run.info.experiment_id, run.info.run_id
        assert links == {
            "MLflow run": f"{mlflow_url}/#/experiments/{exp}/runs/{run_id}?{TRAINING_VIEW}",
            "MLflow experiment": f"{mlflow_url}/#/experiments/{exp}/runs?{TRAINING_VIEW}&compareRunsMode=CHART",
            "registered version": f"{mlflow_url}/#/models/lmforge-demo/versions/3?{TRAINING_VIEW}",
        }
        assert httpx.get(links["MLflow run"]).status_code == 200
        # credentials in the tracking URI reach the server, never a link in the Prefect UI
        with_password = mlflow_url.replace("http://", "http://alice:s3cret@")
        assert mlflow_links(with_password, run.info.run_id, "lmforge-demo", 3) == links
        assert mlflow_links(f"sqlite:///{ws / 'mlflow.db'}", run.info.run_id) == {}  # no UI told to show it

        stop_with_ctrl_c(proc, log, prefect_url, mlflow_url)
        assert not (ws / ".prefect" / ANNOUNCEMENT).exists(), "commands would look for a server that is gone"
    finally:
        kill_with_its_servers(proc)


def test_a_stale_or_silent_server_announcement_is_ignored(tmp_path):
    home = tmp_path / ".prefect"
    home.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / ANNOUNCEMENT).write_text(
        json.dumps({"prefect_api_url": f"http://127.0.0.1:{free_port()}/api", "pid": dead.pid})
    )
    assert announced_server(home) is None  # killed without cleaning up
    announce_server(home, f"http://127.0.0.1:{free_port()}/api")  # this process, but nothing answers there
    assert announced_server(home) is None
    (home / ANNOUNCEMENT).write_text("{not json")
    assert announced_server(home) is None


def _postgres_admin():
    import psycopg

    try:
        return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({e})")


@pytest.fixture
def postgres_databases():
    """Two fresh databases on this machine's PostgreSQL (trust auth, user postgres), dropped after."""
    import uuid

    admin = _postgres_admin()
    names = [f"lmforge_test_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("prefect", "mlflow")]
    for name in names:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield names
    finally:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def command_lines(pid: int) -> list[str]:
    """The command lines of a process's descendants. A child that has just exited (a zombie not
    yet reaped, or gone) has none left to show."""
    lines = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            lines.append(" ".join(child.cmdline()))
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return lines


@pytest.mark.slow
@pytest.mark.server
def test_server_on_postgresql_never_shows_the_password(tmp_path, postgres_databases):
    prefect_db, mlflow_db = postgres_databases
    password = "pw-must-not-show"  # trust auth ignores it; it must not appear anywhere
    prefect_pg = f"postgresql://postgres:{password}@127.0.0.1:5432/{prefect_db}"
    mlflow_pg = f"postgresql://postgres:{password}@127.0.0.1:5432/{mlflow_db}"
    proc, log, prefect_url, mlflow_url = start_server(
        tmp_path,
        env={"LMFORGE_PREFECT_DATABASE_URL": prefect_pg, "LMFORGE_MLFLOW_BACKEND_URI": mlflow_pg},
    )
    try:
        printed = wait_for_line(proc, log, "Ctrl-C stops both", timeout_s=240)
        assert f"postgresql://postgres:***@127.0.0.1:5432/{prefect_db}" in printed
        assert f"postgresql://postgres:***@127.0.0.1:5432/{mlflow_db}" in printed
        assert not [c for c in command_lines(proc.pid) if password in c], "a password on a command line"

        # both servers keep their state in PostgreSQL, not in the workspace
        import psycopg
        from mlflow import MlflowClient

        MlflowClient(mlflow_url).create_experiment("on-postgres")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{mlflow_db}") as conn:
            assert conn.execute("SELECT name FROM experiments WHERE name = 'on-postgres'").fetchall()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{prefect_db}") as conn:
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        assert not (tmp_path / "ws" / ".prefect" / "prefect.db").exists()
        assert not (tmp_path / "ws" / "mlflow.db").exists()

        stop_with_ctrl_c(proc, log, prefect_url, mlflow_url)
    finally:
        kill_with_its_servers(proc)
    logs = [log, *(tmp_path / "ws" / ".prefect").glob("*.log")]
    assert not [p for p in logs if password in p.read_text(errors="replace")], "a password in a log"


# The start of a script that runs with `s`, an EmbeddedServer on the Prefect home given as its argument.
SERVER = (
    "import os, signal, sys, time; from pathlib import Path; from lmforge.embedded import EmbeddedServer\n"
    "s = EmbeddedServer(Path(sys.argv[1]))\n"
)


def embedded_env() -> dict[str, str]:
    """This environment without PREFECT_API_URL: a script's flows run on its own embedded server."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def run_with_server(script: str, home: Path) -> subprocess.CompletedProcess:
    """`python -c script home` on the embedded API, its output captured."""
    cmd = [sys.executable, "-c", script, str(home)]
    return subprocess.run(cmd, env=embedded_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.prefect
def test_embedded_servers_started_at_once_on_a_fresh_home_all_come_up(tmp_path):
    """Commands started together on a new workspace share one fresh SQLite database: one migrates
    it while the others wait, instead of two migrations colliding ("index already exists")."""
    home = tmp_path / ".prefect"
    starter = SERVER + "try:\n    s.wait()\nfinally:\n    s.stop()\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", starter, str(home)], env=embedded_env(), stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)
    assert "already exists" not in (home / "embedded-server.log").read_text()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited; its new parent reaps it
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _gone(pid)


@pytest.mark.prefect
def test_an_embedded_server_leaves_with_its_command_even_when_the_command_is_killed(tmp_path):
    """The embedded server watches its command through its stdin: a command killed outright
    (SIGKILL: no cleanup of its own runs) leaves no Prefect server running behind it."""
    script = SERVER + "s.wait()\nprint(s.process.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    out = run_with_server(script, tmp_path / ".prefect")
    assert out.returncode == -signal.SIGKILL, out.stderr
    server = int(out.stdout.split()[0])
    assert _wait_gone(server, timeout_s=30), "the server outlived its killed command"


@pytest.mark.prefect
def test_a_command_leaves_without_waiting_for_its_server_which_then_shuts_down_cleanly(tmp_path):
    """stop(wait=False) returns at once; the server then shuts down by itself, by uvicorn's own
    graceful shutdown (which ends by raising the SIGTERM it handled again), not by the forced
    exit (status 1) meant for a shutdown that hangs."""
    script = SERVER + (
        "s.wait()\n"
        "process = s.process\n"
        "t0 = time.monotonic(); s.stop(wait=False); returned_s = time.monotonic() - t0\n"
        "print(returned_s, process.poll() is None, flush=True)\n"
        "print(process.wait(timeout=60), flush=True)\n"
    )
    out = run_with_server(script, tmp_path / ".prefect")
    assert out.returncode == 0, out.stderr
    returned_s, running, status = out.stdout.split()
    assert running == "True" and float(returned_s) < 0.1, "stop(wait=False) waited for the server"
    assert int(status) == -signal.SIGTERM, (tmp_path / ".prefect" / "embedded-server.log").read_text()


SLEEPER = """
import sys, time
from prefect import flow
from prefect.runtime import flow_run

@flow(name=sys.argv[1])
def sleeper(seconds: float) -> None:
    print(flow_run.id, flush=True)
    time.sleep(seconds)

sleeper(float(sys.argv[2]))
"""


@pytest.mark.slow
@pytest.mark.server
def test_lmforge_server_marks_a_run_whose_process_died_crashed_and_leaves_finished_runs_alone(tmp_path):
    """A run killed outright (SIGKILL: it reports nothing) would show Running for good; lmforge
    server's automation marks it Crashed once its heartbeats stop. A run that ended normally stays
    as it ended, and a second start replaces the automation rather than adding another."""
    beats = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}  # Prefect's shortest
    proc, log, prefect_url, _ = start_server(tmp_path, "--unresponsive-after", "35", env=beats)
    try:
        printed = wait_for_line(proc, log, "Ctrl-C stops both", timeout_s=240)
        assert "no heartbeat for 35 s" in printed
        env = {**os.environ, **beats, "PREFECT_API_URL": f"{prefect_url}/api"}

        def run(name: str, seconds: float) -> tuple[subprocess.Popen, str]:
            p = subprocess.Popen([sys.executable, "-c", SLEEPER, name, str(seconds)], env=env, stdout=subprocess.PIPE)
            return p, p.stdout.readline().decode().strip()  # its flow run id, once it runs

        killed, killed_id = run("killed-outright", 600)
        finished, finished_id = run("finished", 0)
        assert finished.wait(timeout=120) == 0
        killed.kill()
        killed.wait()

        def state(run_id: str) -> str:
            return httpx.get(f"{prefect_url}/api/flow_runs/{run_id}").json()["state"]["type"]

        assert state(killed_id) == "RUNNING"
        deadline = time.monotonic() + 180
        while state(killed_id) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(2)
        assert state(killed_id) == "CRASHED"
        assert state(finished_id) == "COMPLETED"

        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from lmforge.server import UNRESPONSIVE_RUNS, ServerError, crash_unresponsive_runs

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
            assert crash_unresponsive_runs(f"{prefect_url}/api", 120) == 120  # as `lmforge deploy` does
            with pytest.raises(ServerError, match="between two heartbeats"):
                crash_unresponsive_runs(f"{prefect_url}/api", 30)
        found = httpx.post(f"{prefect_url}/api/automations/filter", json={}).json()
        assert [(a["name"], a["trigger"]["within"]) for a in found if a["name"] == UNRESPONSIVE_RUNS] == [
            (UNRESPONSIVE_RUNS, 120.0)
        ]
        stop_with_ctrl_c(proc, log, prefect_url, _)
    finally:
        kill_with_its_servers(proc)


def server_command(tmp_path: Path, prefect_port: int, mlflow_port: int) -> list[str]:
    return [LMFORGE, "server", "--set", f"workspace={tmp_path / 'ws'}",
            "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]  # fmt: skip


def server_env() -> dict[str, str]:
    env = {**os.environ, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("PREFECT_HOME", None)
    return env


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error:" in line]


def read_until(fd: int, text: str, proc: subprocess.Popen, timeout_s: float) -> str:
    """Read the pipe `fd` until `text` shows (or the process ends, or time is up)."""
    import select

    seen = b""
    deadline = time.monotonic() + timeout_s
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"no {text!r} after {timeout_s} s:\n{seen.decode()}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk or proc.poll() is None, f"lmforge server exited with {proc.poll()}:\n{seen.decode()}"
            seen += chunk
    return seen.decode()


def test_a_port_in_use_fails_at_once_naming_the_port_and_what_holds_it(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(server_command(tmp_path, port, free_port()), env=server_env(), capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    printed = out.stdout + out.stderr
    assert out.returncode == 1, printed
    assert error_lines(printed) == [
        f"error: port {port} on 127.0.0.1, for the prefect server, is in use (Address already in use) by "
        f"pid {os.getpid()} ({' '.join(psutil.Process().cmdline())[:160]}): stop it, or pick another port with "
        "--prefect-port"
    ]
    assert "starting" not in printed and "Traceback" not in printed  # nothing was started


@pytest.mark.slow
@pytest.mark.server
def test_server_outlives_a_closed_pipe_refuses_taken_ports_and_leaves_no_server_when_killed(tmp_path):
    """`lmforge server | tee log`, then Ctrl-C (which ends tee first): exit 0, both servers gone. A
    second start on the same ports fails before starting anything. A `kill -9` of lmforge server
    takes its servers down with it."""
    prefect_port, mlflow_port = free_port(), free_port()
    command = server_command(tmp_path, prefect_port, mlflow_port)
    health = (f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{mlflow_port}/health")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(command, env=server_env(), stdout=write_end, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(write_end)
    servers: list[psutil.Process] = []
    try:
        read_until(read_end, "Ctrl-C stops both", proc, timeout_s=240)
        servers = psutil.Process(proc.pid).children(recursive=True)
        assert len(servers) >= 4  # a guard and a server each, and the servers' workers

        second = subprocess.run(command, env=server_env(), capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        printed = second.stdout + second.stderr
        assert second.returncode == 1 and len(error_lines(printed)) == 1, printed
        assert f"port {prefect_port} on 127.0.0.1" in printed and "by pid " in printed, printed
        assert "Ctrl-C stops both" not in printed

        os.close(read_end)  # the reader is gone (tee ended by the same Ctrl-C)
        read_end = -1
        for url in health:
            assert httpx.get(url, timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(servers, timeout=15)
        assert not alive, f"left running: {alive}"

        with open(tmp_path / "second.out", "wb") as out:  # killed outright, this time
            proc = subprocess.Popen(command, env=server_env(), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)  # fmt: skip
        wait_for_line(proc, tmp_path / "second.out", "Ctrl-C stops both", timeout_s=240)
        servers = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"left running after kill -9: {[p.pid for p in alive]}"
        for url in health:
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, timeout=2)
    finally:
        if read_end >= 0:
            os.close(read_end)
        kill_with_its_servers(proc)
        for p in servers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
