"""Deployments: one per flow, with the config's parameters and cron schedules; served from one
process (`lmforge serve`) or registered to a process work pool (`lmforge deploy`, prefect.yaml)."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from helpers import write_topic_docs

from deployments.build import FLOWS, build_deployments
from lm_core.config import Config, ConfigError, load_config
from lmforge.embedded import free_port
from lmforge.server import UNRESPONSIVE_RUNS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_a_deployment_per_flow_with_the_configs_schedules_and_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        ["schedules.pretrain=30 4 * * 1-5", "schedules.lifecycle=null", "schedules.timezone=Europe/Paris"],
    )
    deployments = build_deployments(cfg)

    assert [d.flow_name for d in deployments] == list(FLOWS)
    assert {d.name for d in deployments} == {"lmforge-tiny"}
    crons = {d.flow_name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules or []] for d in deployments}
    assert crons == {
        "data": [("0 2 * * *", "Europe/Paris")],  # nightly by default
        "pretrain": [("30 4 * * 1-5", "Europe/Paris")],
        "finetune": [],
        "evaluate": [],
        "register": [],
        "lifecycle": [],  # switched off above
        "review": [],  # on demand by default
    }
    for d in deployments:
        # the whole config travels as a parameter, with the workspace made absolute
        sent = Config.model_validate(d.parameters["config"])
        assert sent.workspace == tmp_path / "workspace" and sent.workspace.is_absolute()
        assert sent.model_dump(exclude={"workspace"}) == cfg.model_dump(exclude={"workspace"})
        assert d.entrypoint == f"{FLOWS[d.flow_name][0]}.{FLOWS[d.flow_name][1]}"
        assert d.description, d.flow_name
        # and the artifact parameters are the flow's own: re-run one stage on a given fingerprint from the UI
        props = d._parameter_openapi_schema.properties
        assert "config" in props and ("force" in props or d.flow_name == "review")
    # the nightly data run crawls the sources again; the weekly lifecycle trains on the newest crawl
    assert {d.flow_name for d in deployments if d.parameters.get("refresh")} == {"data"}
    params = {d.flow_name: set(d._parameter_openapi_schema.properties) for d in deployments}
    assert "data" in params["pretrain"] and "model" in params["evaluate"] and "base" in params["finetune"]
    assert "evaluation" in params["register"]
    # a review round from the UI: which models, which prompts, how many
    assert params["review"] == {"config", "challenger", "champion", "prompts", "items"}
    assert "review/lmforge-tiny" in {f"{d.flow_name}/{d.name}" for d in deployments}


def test_a_bad_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="schedules.data.*not a cron string"):
        load_config(None, ["schedules.data=every night"])
    with pytest.raises(ConfigError, match="schedules.timezone.*unknown time zone"):
        load_config(None, ["schedules.timezone=Mars/Olympus"])
    cfg = load_config(None, ["schedules.register=@daily"])
    assert cfg.schedules.cron("register") == "@daily"
    assert cfg.model_dump(mode="json")["schedules"]["register"] == "@daily"  # printed as written


def test_prefect_yaml_declares_the_same_deployments_as_lmforge_deploy_on_the_small_config():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    small = load_config(REPO / "configs" / "small.yaml")
    by_flow = {}
    for d in spec["deployments"]:
        path, function = d["entrypoint"].split(":")
        module = path.removesuffix(".py").replace("/", ".")
        (flow,) = [name for name, target in FLOWS.items() if target == (module, function)]
        by_flow[flow] = d
        assert Config.model_validate(d["parameters"]["config"]) == small, f"{flow}: not configs/small.yaml"
        assert d["parameters"].get("refresh", False) == (flow == "data"), f"{flow}: only the nightly data run refreshes"
        function_params = inspect.signature(getattr(import_module(module), function).fn).parameters
        assert set(d["parameters"]) <= set(function_params), f"{flow}: parameters the flow does not take"
        assert d["name"] == small.name and d["work_pool"]["name"] == "lmforge"
        crons = [(s["cron"], s["timezone"]) for s in d.get("schedules") or []]
        cron = small.schedules.cron(flow)
        assert crons == ([(cron, small.schedules.timezone)] if cron else []), flow
    assert list(by_flow) == list(FLOWS)


def test_serve_and_deploy_ask_for_a_server_first(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli import app

    for command in ("serve", "deploy"):
        r = CliRunner().invoke(app, [command, "--set", f"workspace={tmp_path / 'ws'}"], env={"PREFECT_API_URL": ""})
        assert r.exit_code == 2, r.output
        assert "needs a running Prefect server" in r.output and "lmforge server" in r.output


# ----------------------------------------------------------------------------- against a real server


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server (SQLite in a temporary PREFECT_HOME) on a free port: its API URL."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180  # the first start migrates a fresh database
    try:
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def api(prefect_server, monkeypatch):
    """This test process as a client of the server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server


def data_config(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write_topic_docs(docs, ["arrow", "parquet", "tokens", "shards", "crawler", "scheduler"], sentences=30)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "served",
                "workspace": str(tmp_path / "ws"),
                "crawl": {"files": [{"path": str(docs)}]},
                "clean": {"dedup": {"near": False}},
                "tokenize": {"vocab_size": 512},
                "chunk": {"seq_len": 32, "val_fraction": 0.25},
                "schedules": {"data": "*/5 * * * *", "lifecycle": None},
            }
        )
    )
    return path


def cli_env(api_url: str, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "INFO"}
    env["PREFECT_HOME"] = str(tmp_path / "client-home")
    return env


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.prefect
def test_served_data_deployment_runs_to_completion(api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    config = data_config(tmp_path)
    log = tmp_path / "serve.out"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [str(BIN / "lmforge"), "serve", "--config", str(config)],
            env=cli_env(api, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 90
        with get_client(sync_client=True) as client:
            while True:
                assert serve.poll() is None, log.read_text()
                try:
                    deployment = client.read_deployment_by_name("data/served")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, f"nothing served:\n{log.read_text()}"
                    time.sleep(0.5)
            names = {d.name for d in client.read_deployments()}
        assert names == {"served"}
        assert [s.schedule.cron for s in deployment.schedules] == ["*/5 * * * *"]

        run = run_deployment("data/served", timeout=150, poll_interval=1)
        assert run.state.is_completed(), f"{run.state}\n{log.read_text()}"
        chunks = list((tmp_path / "ws" / "chunk").glob("*/_manifest.json"))
        assert len(chunks) == 1, "the served run built the data artifacts in the configured workspace"
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.prefect
def test_deploy_registers_every_flow_to_a_process_pool_and_prefect_yaml_deploys(api, tmp_path):
    from prefect.client.orchestration import get_client

    env = cli_env(api, tmp_path)
    config = data_config(tmp_path)
    r = subprocess.run(
        [str(BIN / "lmforge"), "deploy", "--config", str(config), "--pool", "lmforge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prefect worker start --pool lmforge" in r.stdout
    assert "no heartbeat for 540 s" in r.stdout  # a worker's run whose process died is marked Crashed
    # the declarative form, as a team would run it from the repository, to the pool made above
    r = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("lmforge")
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
        (unresponsive,) = client.read_automations_by_name(UNRESPONSIVE_RUNS)
    assert unresponsive.trigger.within.total_seconds() == 540 and unresponsive.enabled
    assert pool.type == "process"
    found = {(flows[d.flow_id], d.name): d for d in deployments}
    for flow in FLOWS:
        for name in ("served", "lmforge-small"):
            d = found[(flow, name)]
            assert d.work_pool_name == "lmforge", (flow, name)
    assert [s.schedule.cron for s in found[("lifecycle", "lmforge-small")].schedules] == ["0 3 * * 0"]
    assert found[("data", "served")].entrypoint == "flows.data.data_flow"
    assert found[("data", "lmforge-small")].parameters["config"]["name"] == "lmforge-small"


def test_every_flow_gives_prefect_the_schema_it_would_derive_for_config_and_validates_with_config():
    """Flows hand Prefect Config's JSON schema ready-made (flows/common.py, computed once). It
    must be the schema Prefect derives for a `Config` parameter, or a deployment's form in the UI
    and the API's check of its parameters would drift from the config; values are still checked
    by Config itself, errors naming the field."""
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    from flows.common import standalone_schema
    from flows.stages import STAGE_FLOWS

    def plain(config: Config): ...

    derived = parameter_schema(plain).model_dump()
    expected = standalone_schema({**derived["properties"]["config"], "$defs": derived["definitions"]})
    assert expected["properties"]["pretrain"]["properties"]["lr"]  # nested sections are spelled out
    flows = {name: getattr(import_module(module), function) for name, (module, function) in FLOWS.items()}
    for name, a_flow in {**flows, **STAGE_FLOWS}.items():
        assert a_flow.parameters.model_dump()["properties"]["config"] == expected, name
        assert a_flow.with_options(name=f"{name}-again").parameters == a_flow.parameters, name

    lifecycle = flows["lifecycle"]
    assert lifecycle.validate_parameters({"config": {"seed": 7}})["config"] == Config(seed=7)
    with pytest.raises(ParameterTypeError, match=r"config\.pretrain\.lr"):
        lifecycle.validate_parameters({"config": {"pretrain": {"lr": "fast"}}})
