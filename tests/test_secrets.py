"""A password in a store URL: never printed, never stored (manifests, MLflow, Prefect's database),
yet used; an unreachable tracking server is one clear error within seconds."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from lm_core.config import ConfigError, load_config
from lm_core.secrets import mask_url, mask_urls, tracking_credentials_to_env
from lmforge.embedded import free_port
from lmforge.server import ServerError, check_tracking_server
from tests.helpers import write_topic_docs

LMFORGE = str(Path(sys.executable).parent / "lmforge")
MLFLOW = str(Path(sys.executable).parent / "mlflow")
SECRET = "UNIQUE-SECRET-7f3a9c"
USER = "alice"


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"):
        monkeypatch.delenv(k, raising=False)


def test_a_tracking_uri_gives_its_credentials_to_the_environment_and_keeps_none(clean_env):
    cfg = load_config(None, [f"tracking.tracking_uri=http://{USER}:{SECRET}@127.0.0.1:5000"])
    assert cfg.tracking_uri == "http://127.0.0.1:5000"
    assert SECRET not in cfg.model_dump_json()
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (USER, SECRET)
    # percent-escaped characters are the password's own
    assert tracking_credentials_to_env("https://bob:p%40ss@mlflow.internal/") == "https://mlflow.internal/"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    # a PostgreSQL store: libpq's PGPASSWORD, the user stays in the URL
    assert tracking_credentials_to_env("postgresql://ml:pw@db:5432/mlflow") == "postgresql://ml@db:5432/mlflow"
    assert os.environ["PGPASSWORD"] == "pw"
    # URLs without a password are left as they are (so are fingerprints that name them)
    for uri in ("sqlite:////tmp/ws/mlflow.db", "http://127.0.0.1:5000", "postgresql://ml@db/mlflow", "databricks"):
        assert tracking_credentials_to_env(uri) == uri


def test_a_password_no_environment_can_carry_or_in_a_seed_url_is_refused_masked(clean_env):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"tracking.tracking_uri=mysql://me:{SECRET}@db/mlflow"])
    assert SECRET not in str(e.value) and "tracking.tracking_uri" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"crawl.urls=[https://me:{SECRET}@intranet.example/docs/]"])
    assert SECRET not in str(e.value) and "~/.netrc" in str(e.value)


def test_masking():
    assert mask_url(f"postgresql://me:{SECRET}@db/x") == "postgresql://me:***@db/x"
    assert mask_url("http://me@db/x") == "http://me@db/x"
    text = f"failed: http://a:{SECRET}@h:1/api and postgresql://b:{SECRET}@db/x, see https://h/a@b"
    assert mask_urls(text) == "failed: http://a:***@h:1/api and postgresql://b:***@db/x, see https://h/a@b"


# ----------------------------------------------------------------------------- real servers


class _AuthProxy(BaseHTTPRequestHandler):
    """In front of the MLflow server: answers 401 without the right basic credentials, forwards
    the rest. So the run proves the password reached the server, by the environment."""

    upstream = ""
    expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    authorized = 0

    def _forward(self):
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).authorized += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        r = httpx.request(self.command, self.upstream + self.path, content=body, headers=headers, timeout=60)
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() in ("content-type",):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):
        pass


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (SQLite store, proxied artifacts) behind a basic-auth proxy:
    (the proxy's URL, the server's folder)."""
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _AuthProxy.upstream = f"http://127.0.0.1:{port}"
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _AuthProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "server.log").read_text()
            time.sleep(0.5)
        yield f"http://127.0.0.1:{proxy.server_address[1]}", folder
    finally:
        proxy.shutdown()
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _no_secret_in(root: Path) -> list[str]:
    """Files under `root` whose bytes hold the password (SQLite databases and their journals too)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_HOME", "MLFLOW_TRACKING_", "PGPASS"))}
    env.update(DO_NOT_TRACK="true", PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true")
    return env  # PREFECT_HOME unset: inside the workspace, where the test reads its database


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.prefect
def test_a_password_in_the_tracking_uri_is_used_but_never_printed_or_stored(tmp_path, mlflow_server):
    proxy_url, server_folder = mlflow_server
    host = proxy_url.removeprefix("http://")
    assert httpx.get(f"{proxy_url}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    docs, ws = tmp_path / "docs", tmp_path / "ws"
    write_topic_docs(docs, ["rivers", "engines", "gardens"], sentences=60)
    config = tmp_path / "secret.yaml"  # outside the workspace: the user's file holds the password
    config.write_text(
        yaml.safe_dump(
            {
                "name": "secrets-test",
                "workspace": str(ws),
                "crawl": {"files": [{"path": str(docs)}]},
                "clean": {"dedup": {"near": False}},
                "tokenize": {"vocab_size": 512},
                "chunk": {"seq_len": 32, "val_fraction": 0.25},
                "model": {"preset": "tiny"},
                "pretrain": {"max_steps": 6, "micro_batch": 4, "eval_every": 6, "checkpoint_every": 6},
                "evaluate": {"heldout_pairs": 4, "val_batches": 2},
                "tracking": {"tracking_uri": f"http://{USER}:{SECRET}@{host}", "system_metrics": False},
            }
        )
    )
    start = time.monotonic()
    r = subprocess.run(
        [LMFORGE, "run", "--config", str(config)],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"lmforge run: {time.monotonic() - start:.1f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _AuthProxy.authorized > 0  # the password reached the server
    assert SECRET not in r.stdout and SECRET not in r.stderr
    assert (ws / ".prefect").is_dir() and any((ws / ".prefect").glob("*.db"))
    assert _no_secret_in(ws) == []  # artifacts, manifests, Prefect's database (flow run parameters)
    assert _no_secret_in(server_folder) == []  # MLflow's store: params, tags, config.json, models
    # ... and the run is there, with its config, on the server
    db = (server_folder / "mlflow.db").read_bytes()
    assert b"secrets-test" in db
    assert list((server_folder / "art").rglob("config.json"))


@pytest.mark.slow
@pytest.mark.prefect
def test_an_unreachable_tracking_server_is_one_clear_error_within_seconds(tmp_path):
    port = free_port()  # closed: nothing listens
    start = time.monotonic()
    r = subprocess.run(
        [LMFORGE, "stage", "pretrain", "--set", f"workspace={tmp_path / 'ws'}"]
        + ["--set", f"tracking.tracking_uri=http://{USER}:{SECRET}@127.0.0.1:{port}"],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    assert took < 30, took
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert SECRET not in out and "Traceback" not in out
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, out
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in error[0]
    assert "lmforge server" in error[0] and "tracking.tracking_uri" in error[0]


@pytest.mark.slow
@pytest.mark.server
def test_wrong_credentials_are_named_as_such(clean_env, mlflow_server, monkeypatch):
    proxy_url, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(ServerError, match="refused the credentials"):
        check_tracking_server(proxy_url)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    check_tracking_server(proxy_url)
