"""`mlflow models serve` serves the registered champion: JSON prompts (or a chat model's
conversations) in, generated text out; what the context cannot hold is refused, never cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_registry import Store, build_model_folder

from lm_core.config import RegistryConfig
from lm_core.model_folder import mark_chat_model
from lm_core.registry.register import register_model
from lm_core.textgen import GenerationSettings, TextModel
from lm_core.tokenize.chat_template import Message
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
    with serving(store, "models:/served@champion", tmp_path / "server.log") as url:
        yield url


@contextmanager
def serving(store: Store, model_uri: str, log: Path) -> Iterator[str]:
    port = free_port()
    # The venv's bin first: `mlflow models serve` runs `uvicorn` found on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
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

    # What the context cannot hold is refused with the figures, never cut in silence.
    too_many = {"dataframe_records": [{"prompt": prompts[0]}], "params": {"max_new_tokens": 100000}}
    bad = httpx.post(f"{server}/invocations", json=too_many, timeout=60)
    assert bad.status_code == 400
    assert "context of 64 tokens" in bad.json()["message"] and "at most" in bad.json()["message"]
    long_prompt = {"dataframe_records": [{"prompt": "hello " * 100}]}
    bad = httpx.post(f"{server}/invocations", json=long_prompt, timeout=60)
    assert bad.status_code == 400 and "leaves no room" in bad.json()["message"]
    # Without max_new_tokens a prompt gets as many new tokens as its context leaves (up to 64).
    model = TextModel.load(model_dir)
    room = model.fit(len(model.prompt_ids(prompts[0])), None)
    assert room < 64
    answer = httpx.post(f"{server}/invocations", json={"dataframe_records": [{"prompt": prompts[0]}]}, timeout=60)
    expected = model.generate(prompts[:1], GenerationSettings(max_new_tokens=room))
    assert answer.status_code == 200 and answer.json() == {"predictions": [{"text": expected[0]}]}

    # A pretrained model has no chat template: it refuses a conversation by name.
    chat = {"dataframe_records": [{"messages": [{"role": "user", "content": "hi"}]}]}
    bad = httpx.post(f"{server}/invocations", json=chat, timeout=60)
    assert bad.status_code == 400 and "not a chat model" in bad.json()["message"]


def test_a_served_chat_model_answers_openai_style_messages(champion, tmp_path: Path):
    store, _ = champion
    chat_dir = build_model_folder(tmp_path / "chat", seed=11)
    mark_chat_model(chat_dir)
    register_model(RegistryConfig(), store.uri, store.new_run(), chat_dir, {"val_bpb": 2.0}, None, {}, name="talker")
    model = TextModel.load(chat_dir)
    conversation = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "the quick brown fox"},
        {"role": "assistant", "content": "jumps"},
        {"role": "user", "content": "hello"},
    ]
    settings = GenerationSettings(max_new_tokens=6)
    expected = model.reply([[Message(**m) for m in conversation]], settings)[0]
    as_user = model.reply([[Message("user", "hello")]], settings)[0]

    with serving(store, "models:/talker@champion", tmp_path / "chat-server.log") as url:
        records = [{"messages": conversation}, {"prompt": "hello", "messages": None}]
        answer = httpx.post(
            f"{url}/invocations", json={"dataframe_records": records, "params": {"max_new_tokens": 6}}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [{"text": expected}, {"text": as_user}]}

        for messages, says in (
            ([{"role": "tool", "content": "x"}], "unknown role 'tool'"),
            ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "system message may only come"),
            ([{"role": "user", "content": "hi " * 100}], "context of 64 tokens"),
        ):
            bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"messages": messages}]}, timeout=60)
            assert bad.status_code == 400 and says in bad.json()["message"], bad.text
        both = {"dataframe_records": [{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}]}
        bad = httpx.post(f"{url}/invocations", json=both, timeout=60)
        assert bad.status_code == 400 and "not both" in bad.json()["message"]
