"""Team servers (deployments/team/): the Prefect server and the MLflow server on PostgreSQL, started
by the team's own scripts from an env file made from `team.env.example`, and a worker; the tiny
lifecycle recorded by both servers, and a scheduled deployment that fires on its own.

Uses this machine's PostgreSQL (127.0.0.1:5432, user postgres, trust auth): two fresh databases,
each owned by a role with a password, dropped after. The passwords are put in the database URLs,
as a team's would be, so that the tests can look for them where they must never show.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from helpers import write_topic_docs

from lmforge.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
TEAM = REPO / "deployments" / "team"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.server, pytest.mark.slow]

START_TIMEOUT_S = 240  # a fresh Prefect database migrates on first start: slow on a loaded 2-core machine
LIFECYCLE_TIMEOUT_S = 480  # under pytest-timeout's 600 s per test
SCHEDULED_TIMEOUT_S = 300  # the next minute, the worker's poll, then the data flow itself


def env_file_from_example(values: dict[str, str | None]) -> str:
    """team.env.example with `values` set (None: the line removed). Every key set must already be
    in the example: the test fails when the example and the scripts drift apart."""
    lines, seen = [], set()
    for line in (TEAM / "team.env.example").read_text().splitlines():
        key = line.partition("=")[0] if "=" in line and not line.startswith("#") else None
        if key in values:
            seen.add(key)
            if values[key] is not None:
                lines.append(f"{key}={values[key]}")
            continue
        lines.append(line)
    assert seen == set(values), f"not in team.env.example: {sorted(set(values) - seen)}"
    return "\n".join(lines) + "\n"


def write_team_env(folder: Path, mlflow_port: int, values: dict[str, str | None]) -> Path:
    """`folder/team.env` from the example with this checkout, a Prefect home in `folder`, one
    MLflow worker on `mlflow_port`, and `values`; readable by its owner only, as the docs ask."""
    env_file = folder / "team.env"
    common = {"LMFORGE_HOME": str(REPO), "PREFECT_HOME": str(folder / "prefect-home")}
    env_file.write_text(
        env_file_from_example(common | {"MLFLOW_PORT": str(mlflow_port), "MLFLOW_WORKERS": "1"} | values)
    )
    env_file.chmod(0o600)
    return env_file


def test_the_team_files_bind_to_localhost_and_start_the_scripts_that_are_here():
    """What a team copies as it is: nothing listens beyond 127.0.0.1 until they say so, and the
    systemd units start scripts that exist (at the /opt/lmforge checkout the docs install)."""
    settings = dict(
        line.split("=", 1) for line in (TEAM / "team.env.example").read_text().splitlines() if line[:1].isalpha()
    )
    assert settings["PREFECT_SERVER_API_HOST"] == settings["MLFLOW_HOST"] == "127.0.0.1"
    for key in ("PREFECT_API_DATABASE_CONNECTION_URL", "MLFLOW_BACKEND_STORE_URI", "AWS_SECRET_ACCESS_KEY"):
        assert "CHANGE-ME" in settings[key], f"{key}: a secret must be a placeholder the scripts refuse"
    compose = yaml.safe_load((TEAM / "docker-compose.yml").read_text())
    published = [p for service in compose["services"].values() for p in service.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    for unit in (TEAM / "systemd").glob("*.service"):
        (exec_start,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
        script = REPO / Path(exec_start.removeprefix("ExecStart=")).relative_to("/opt/lmforge")
        assert script.is_file() and os.access(script, os.X_OK), unit.name
    assert os.access(TEAM / "postgres-init.sh", os.X_OK)


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM to its process group (the script execs the server, which spawns workers), then SIGKILL."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever it left behind in its group
        except ProcessLookupError:
            pass
        self.process.wait()


@dataclass
class Team:
    tmp: Path
    env_file: Path
    passwords: list[str]
    databases: list[str]
    prefect_api: str
    mlflow_url: str
    artifacts: Path
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, script: str, extra_env: dict[str, str] | None = None) -> Service:
        env = {**os.environ, "LMFORGE_ENV_FILE": str(self.env_file), **(extra_env or {})}
        env.pop("PREFECT_API_URL", None)  # what the env file says, nothing else
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(TEAM / script)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def logs(self, tail: int | None = 6000) -> str:
        """What the services printed (the end of it, unless tail=None)."""
        return "\n".join(f"----- {s.name}:\n{s.log.read_text(errors='replace')[-(tail or 0) :]}" for s in self.services)

    def wait_healthy(self, service: Service, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = service.process.poll()
            assert code is None, f"{service.name} exited with {code}\n{self.logs()}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no answer from {service.name} in {START_TIMEOUT_S} s\n{self.logs()}"
            time.sleep(0.5)

    def client_env(self, **extra: str) -> dict[str, str]:
        """A user's shell: PREFECT_API_URL set, no secret of the servers."""
        env = {**os.environ, "PREFECT_API_URL": self.prefect_api, "PREFECT_LOGGING_LEVEL": "INFO", **extra}
        env.pop("PREFECT_HOME", None)  # the workspace's own, as for any user's run
        return env

    def shows_a_password(self, text: str) -> bool:
        return any(pw in text for pw in self.passwords)

    def assert_password_on_no_command_line(self) -> None:
        shown = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if self.shows_a_password(" ".join(p.info["cmdline"] or [])):
                shown.append((p.info["pid"], p.info["cmdline"]))
        assert not shown, f"a password on a command line: {shown}"


def postgres_admin():
    import psycopg

    try:
        return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({e})")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Two fresh databases, each owned by a role with a password, made by deployments/team/postgres-init.sh;
    the Prefect server and the MLflow server started by deployments/team/*-server.sh from an env file
    made from team.env.example. All of it removed after."""
    tmp = tmp_path_factory.mktemp("team")
    suffix = uuid.uuid4().hex[:8]
    databases = [f"lmforge_team_prefect_{suffix}", f"lmforge_team_mlflow_{suffix}"]  # role = database
    passwords = [f"team-pw-{uuid.uuid4().hex}" for _ in databases]  # trust auth ignores them; they must show nowhere
    admin = postgres_admin()
    team = None
    try:
        r = subprocess.run(
            [str(TEAM / "postgres-init.sh")],
            env={
                **os.environ,
                "PGHOST": "127.0.0.1",
                "PGPORT": "5432",
                "PGUSER": "postgres",
                "PGDATABASE": "postgres",
                "PREFECT_DB_USER": databases[0],
                "PREFECT_DB_NAME": databases[0],
                "PREFECT_DB_PASSWORD": passwords[0],
                "MLFLOW_DB_USER": databases[1],
                "MLFLOW_DB_NAME": databases[1],
                "MLFLOW_DB_PASSWORD": passwords[1],
            },
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        owners = admin.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)", [databases]
        ).fetchall()
        assert sorted(owners) == sorted((db, db) for db in databases)
        prefect_port, mlflow_port = free_port(), free_port()
        prefect_db, mlflow_db = (f"{db}:{pw}@127.0.0.1:5432/{db}" for db, pw in zip(databases, passwords, strict=True))
        env_file = write_team_env(
            tmp,
            mlflow_port,
            {
                "PREFECT_SERVER_API_PORT": str(prefect_port),
                "PREFECT_UI_API_URL": f"http://127.0.0.1:{prefect_port}/api",
                # plain postgresql://: the script adds the +asyncpg driver Prefect needs
                "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql://{prefect_db}",
                "MLFLOW_BACKEND_STORE_URI": f"postgresql://{mlflow_db}",
                # no object store on this machine: a local folder, through the same proxy
                "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "mlartifacts"),
                "MLFLOW_S3_ENDPOINT_URL": None,
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            },
        )
        team = Team(
            tmp=tmp,
            env_file=env_file,
            passwords=passwords,
            databases=databases,
            prefect_api=f"http://127.0.0.1:{prefect_port}/api",
            mlflow_url=f"http://127.0.0.1:{mlflow_port}",
            artifacts=tmp / "mlartifacts",
        )
        prefect = team.start("prefect-server", "prefect-server.sh")
        mlflow = team.start("mlflow-server", "mlflow-server.sh")
        team.wait_healthy(prefect, f"{team.prefect_api}/health")
        team.wait_healthy(mlflow, f"{team.mlflow_url}/health")
        yield team
    finally:
        if team is not None:
            for service in reversed(team.services):
                service.stop()
        for db in databases:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {db}")
        admin.close()


@pytest.fixture
def prefect_client(team):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: team.prefect_api}):
        with get_client(sync_client=True) as client:
            yield client


def test_the_servers_keep_their_state_in_postgresql_and_show_no_password(team):
    import psycopg

    for db, table in zip(team.databases, ("alembic_version", "experiments"), strict=True):
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() is not None
    printed = team.logs(tail=None)
    prefect_db, mlflow_db = team.databases
    assert f"postgresql+asyncpg://{prefect_db}:***@127.0.0.1:5432/{prefect_db}" in printed  # masked
    assert f"postgresql://{mlflow_db}:***@127.0.0.1:5432/{mlflow_db}" in printed
    assert not team.shows_a_password(printed)
    team.assert_password_on_no_command_line()
    assert httpx.get(team.prefect_api.removesuffix("/api"), timeout=10).status_code == 200  # the UI
    # each server gets only its own secret
    server_envs = {s.name: psutil.Process(s.process.pid).environ() for s in team.services}
    assert "MLFLOW_BACKEND_STORE_URI" not in server_envs["prefect-server"]
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in server_envs["mlflow-server"]
    assert stat.S_IMODE(team.env_file.stat().st_mode) == 0o600


def test_the_tiny_lifecycle_is_recorded_by_both_team_servers(team, prefect_client):
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    ws = team.tmp / "ws"
    started = time.monotonic()
    r = subprocess.run(
        [str(BIN / "lmforge"), "run", "--config", str(REPO / "configs" / "tiny.yaml")]
        + ["--set", f"workspace={ws}", "--set", f"tracking.tracking_uri={team.mlflow_url}"],
        env=team.client_env(),
        cwd=team.tmp,
        capture_output=True,
        text=True,
        timeout=LIFECYCLE_TIMEOUT_S,
    )
    output = r.stdout + r.stderr
    print(f"lmforge run: {time.monotonic() - started:.0f} s")
    assert r.returncode == 0, f"{output[-8000:]}\n{team.logs()}"
    assert not (ws / ".prefect" / "prefect.db").exists(), "ran on the embedded API, not the team server"
    assert not (ws / "mlflow.db").exists(), "tracked in the workspace, not on the team server"

    # Prefect: the lifecycle run, completed: its `data` subflow run and its model stages' task runs
    (lifecycle,) = prefect_client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["lifecycle"])))
    assert lifecycle.state.is_completed(), lifecycle.state
    children = prefect_client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[lifecycle.id]))
    )
    flow_names = {f.id: f.name for f in prefect_client.read_flows()}
    assert [(flow_names[c.flow_id], c.state.name) for c in children] == [("data", "Completed")]
    stage_runs = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[lifecycle.id])))
    stages = {r.name.rsplit("-", 1)[0]: r.state.name for r in stage_runs if r.name.rsplit("-", 1)[0] != "data"}
    assert stages == dict.fromkeys(["pretrain", "evaluate", "register", "finetune"], "Completed"), stages
    assert not team.shows_a_password(json.dumps(lifecycle.parameters, default=str))

    # MLflow: both models registered, each with a champion, traced to a flow run of the team server
    client = MlflowClient(team.mlflow_url)
    registered = {m.name for m in client.search_registered_models()}
    assert {"lmforge-tiny", "lmforge-tiny-chat"} <= registered, registered
    for name in ("lmforge-tiny", "lmforge-tiny-chat"):
        champion = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(champion.run_id)
        assert prefect_client.read_flow_run(run.data.tags["prefect.flow_run_id"]).state.is_completed()
        assert client.list_artifacts(champion.run_id), "no artifact reached the server"

    # artifacts went through the server to its destination (an object store on a real team's server)
    experiment = client.get_experiment_by_name("lmforge-tiny")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    assert list(team.artifacts.rglob("MLmodel")), f"no registered model in {team.artifacts}"

    # the database password is nowhere a user looks: params, tags, the run's output, the logs
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for run in runs:
        shown = json.dumps([run.data.params, run.data.tags])
        assert not team.shows_a_password(shown), f"a password in MLflow run {run.info.run_id}"
    assert not team.shows_a_password(output)
    assert not team.shows_a_password(team.logs(tail=None))
    team.assert_password_on_no_command_line()
    # ... nor anything either server stored (flow run parameters, Prefect logs and artifacts, MLflow
    # params, tags, model versions), nor any file the run or the MLflow server wrote
    for db in team.databases:
        dump = subprocess.run(
            ["pg_dump", "--data-only", f"postgresql://postgres@127.0.0.1:5432/{db}"],
            capture_output=True,
            timeout=120,
        )
        assert dump.returncode == 0, dump.stderr
        assert b"lmforge-tiny" in dump.stdout, f"{db}: the run is not in this dump"  # it would find a password
        assert not [pw for pw in team.passwords if pw.encode() in dump.stdout], f"a password stored in {db}"
    for folder in (ws, team.artifacts):
        files = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
        assert files
        assert not [p for p in files if any(pw.encode() in p.read_bytes() for pw in team.passwords)]


def data_config(tmp: Path, name: str) -> Path:
    docs = tmp / f"docs-{name}"
    write_topic_docs(docs, ["arrow", "parquet", "tokens", "shards", "crawler", "scheduler"], sentences=30)
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "workspace": str(tmp / f"ws-{name}"),
                "crawl": {"files": [{"path": str(docs)}]},
                "clean": {"dedup": {"near": False}},
                "tokenize": {"vocab_size": 512},
                "chunk": {"seq_len": 32, "val_fraction": 0.25},
                "schedules": {"data": "* * * * *", "lifecycle": None},  # every minute
            }
        )
    )
    return path


def test_scheduled_deployments_fire_on_their_own_on_a_worker_and_on_lmforge_serve(team, prefect_client):
    """`lmforge deploy` to the pool that deployments/team/worker.sh polls, and `lmforge serve`: the
    server's scheduler creates the runs from the cron schedule, and each one completes."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.exceptions import ObjectNotFound

    env = team.client_env()
    r = subprocess.run(
        [str(BIN / "lmforge"), "deploy", "--config", str(data_config(team.tmp, "team-pool")), "--pool", "lmforge"],
        env=env,
        cwd=team.tmp,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    worker = team.start("worker", "worker.sh")
    serve_log = team.tmp / "serve.log"
    with open(serve_log, "wb") as out:
        serve = subprocess.Popen(
            [str(BIN / "lmforge"), "serve", "--config", str(data_config(team.tmp, "team-served"))],
            env=env,
            cwd=team.tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    served = Service("serve", serve, serve_log)
    team.services.append(served)  # stopped with the servers, whatever happens here
    try:
        deadline = time.monotonic() + SCHEDULED_TIMEOUT_S
        deployments = {}
        while len(deployments) < 2:
            assert worker.process.poll() is None and serve.poll() is None, team.logs()
            assert time.monotonic() < deadline, f"deployments not registered\n{team.logs()}"
            for name in {"team-pool", "team-served"} - set(deployments):
                try:
                    deployments[name] = prefect_client.read_deployment_by_name(f"data/{name}")
                except ObjectNotFound:
                    time.sleep(1)
        assert deployments["team-pool"].work_pool_name == "lmforge"
        assert [s.schedule.cron for s in deployments["team-served"].schedules] == ["* * * * *"]

        # nobody triggers a run: wait for the ones the schedules make to complete
        ids = [d.id for d in deployments.values()]
        done: dict[str, object] = {}
        runs = []
        while len(done) < 2:
            assert worker.process.poll() is None, team.logs()
            assert serve.poll() is None, team.logs()
            assert time.monotonic() < deadline, (
                f"no completed scheduled run of {set(deployments) - set(done)} in {SCHEDULED_TIMEOUT_S} s\n"
                + "\n".join(f"{r.name} {r.state_name} {r.expected_start_time}" for r in runs)
                + f"\n{team.logs()}"
            )
            runs = prefect_client.read_flow_runs(  # not the hundred future runs of each schedule
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=["SCHEDULED"]))
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
            )
            for run in runs:
                name = next(n for n, d in deployments.items() if d.id == run.deployment_id)
                assert not run.state.is_final() or run.state.is_completed(), f"{name}: {run.state}\n{team.logs()}"
                if run.state.is_completed():
                    done.setdefault(name, run)
            time.sleep(2)
        for name, run in done.items():
            assert run.auto_scheduled, f"{name}: not created by the schedule"
            assert run.expected_start_time.second == 0 and run.expected_start_time.microsecond == 0, run
            assert list((team.tmp / f"ws-{name}" / "chunk").glob("*/_manifest.json")), f"{name}: no chunk artifact"
        for d in deployments.values():
            prefect_client.pause_deployment(d.id)  # no more runs while the test winds down

        # the worker's flow runs inherit its environment: worker.sh leaves the servers' secrets out
        worker_env = psutil.Process(worker.process.pid).environ()
        assert "PREFECT_API_DATABASE_CONNECTION_URL" not in worker_env and "MLFLOW_BACKEND_STORE_URI" not in worker_env
        assert not team.shows_a_password(json.dumps(worker_env))
        team.assert_password_on_no_command_line()
    finally:
        # Ctrl-C, as a user stops `lmforge serve`; then the worker, as systemd stops it
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        served.stop()
        worker.stop()
    assert not team.shows_a_password(worker.log.read_text(errors="replace"))


def test_mlflow_server_keeps_artifacts_in_an_s3_compatible_store(tmp_path):
    """MLFLOW_ARTIFACTS_DESTINATION=s3://... with MLFLOW_S3_ENDPOINT_URL and the AWS keys of
    team.env.example, against moto's S3 server standing in for MinIO: clients log and read
    artifacts through the MLflow server, which alone holds the keys. Needs boto3 (MLflow's S3
    client: lmforge's `s3` extra) and moto[server], both in the `dev` extra: skipped without them."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from mlflow import MlflowClient

    secret = f"s3-secret-{uuid.uuid4().hex}"
    s3_port, mlflow_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    keys = {"AWS_ACCESS_KEY_ID": "lmforge-test", "AWS_SECRET_ACCESS_KEY": secret}
    env_file = write_team_env(
        tmp_path,
        mlflow_port,
        {
            "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",  # PostgreSQL: tested above
            "MLFLOW_ARTIFACTS_DESTINATION": "s3://lmforge-mlflow/artifacts",
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            **keys,
        },
    )
    team = Team(
        tmp=tmp_path,
        env_file=env_file,
        passwords=[secret],
        databases=[],
        prefect_api="",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        artifacts=tmp_path,
    )
    with open(tmp_path / "s3.log", "wb") as out:
        s3 = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    team.services.append(Service("s3", s3, tmp_path / "s3.log"))
    try:
        team.wait_healthy(team.services[0], f"{endpoint}/moto-api/")
        bucket = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_aws(keys))
        bucket.create_bucket(Bucket="lmforge-mlflow")
        mlflow = team.start("mlflow-server", "mlflow-server.sh")
        team.wait_healthy(mlflow, f"{team.mlflow_url}/health")

        client = MlflowClient(team.mlflow_url)
        run = client.create_run(client.create_experiment("s3"))
        client.log_text(run.info.run_id, "kept in the bucket", "note.txt")
        objects = [o["Key"] for o in bucket.list_objects_v2(Bucket="lmforge-mlflow").get("Contents", [])]
        assert [k for k in objects if k.startswith("artifacts/") and k.endswith("/note.txt")], objects
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
        team.assert_password_on_no_command_line()
        assert not team.shows_a_password(team.logs(tail=None))
    finally:
        for service in reversed(team.services):
            service.stop()


def _aws(keys: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": keys["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}
