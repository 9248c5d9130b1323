"""`mlflow models serve` serves the registered champion: JSON prompts in, generated text out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_registry import Store, build_model_folder

from lm_core.config import RegistryConfig
from lm_core.registry.register import register_model
from lm_core.textgen import GenerationSettings, TextModel
from lmforge.embedded import free_port

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 180  # the server imports torch and mlflow, then loads the model


@pytest.fixture
def champion(tmp_path: Path) -> tuple[Store, Path]:
    store = Store(tmp_path / "mlflow")
    model_dir = build_model_folder(tmp_path / "model", seed=7)
    result = register_model(
        RegistryConfig(), store.uri, store.new_run(), model_dir, {"val_bpb": 2.0}, None, {}, name="served"
    )
    assert result.champion
    return store, model_dir


@pytest.fixture
def server(champion, tmp_path: Path) -> Iterator[str]:
    store, _ = champion
    port = free_port()
    # The venv's bin first: `mlflow models serve` runs `uvicorn` found on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path}
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/served@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        # A session of its own: stopping its process group stops uvicorn too.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, proc, log)
        yield url
    finally:
        _stop(proc)


def _wait_until_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server did not answer /ping within {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def test_the_served_champion_answers_prompts_with_text(server: str, champion):
    _, model_dir = champion
    prompts = ["the quick brown fox", "hello"]
    expected = TextModel.load(model_dir).generate(prompts, GenerationSettings(max_new_tokens=6))

    records = {"dataframe_records": [{"prompt": p} for p in prompts], "params": {"max_new_tokens": 6}}
    answer = httpx.post(f"{server}/invocations", json=records, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [{"text": t} for t in expected]}

    split = {"dataframe_split": {"columns": ["prompt", "max_new_tokens"], "data": [[prompts[0], 6]]}}
    answer = httpx.post(f"{server}/invocations", json=split, timeout=60)
    assert answer.json() == {"predictions": [{"text": expected[0]}]}

    bad = httpx.post(f"{server}/invocations", json={**records, "params": {"temperature": -1.0}}, timeout=60)
    assert bad.status_code == 400 and "temperature must be >= 0" in bad.json()["message"]
