"""The Prefect and MLflow UIs as a user sees them, in a real headless browser (Debian's Chromium,
driven by Playwright): the tiny lifecycle with fine-tuning, run while `lmforge server` runs, renders
in full in Prefect's default UI (every stage task listed, each task's page drawn with its
artifacts, told apart per model, their cells showing what the data holds), and its links lead to
the MLflow UI's training runs and loss curves, and from there back to the Prefect flow run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from test_server import LMFORGE, kill_with_its_servers, start_server, wait_for_line

pytestmark = [pytest.mark.server, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; `./forge test` installs it where apt-get can
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
FAST = ("pretrain.max_steps=10", "finetune.max_steps=4", "finetune.quantize=false", "tracking.system_metrics=false")
DATA_STAGES = ("crawl", "clean", "tokenize", "chunk", "stats")
MODEL_STAGES = {"pretrain": 1, "evaluate": 2, "register": 2, "finetune": 1}  # task runs of the lifecycle run
PER_MODEL = ("evaluate-metrics", "evaluate-samples", "evaluate-results", "register-comparison", "register-decision")
# what each stage's task page shows under Artifacts (besides its progress bar, for a long stage)
ARTIFACTS = {
    "crawl": ["crawl-stats"],
    "clean": ["clean-stats", "clean-rejected-by-reason"],
    "tokenize": ["tokenize-stats"],
    "chunk": ["chunk-stats"],
    "stats": ["stats-stats", "stats-top-tokens", "stats-length-histogram"],
    "pretrain": ["pretrain-stats", "pretrain-summary", "pretrain-mlflow-run"],
    "finetune": ["finetune-stats", "finetune-summary", "finetune-mlflow-run"],
}
UI_TIMEOUT_MS = 30_000  # a page's first load compiles the UI's scripts: slow on a busy machine


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` (./forge test installs it where apt-get can)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright's own browser downloads are not needed: the system's Chromium runs headless
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page of a fresh browser context (no stored UI settings), its console kept in `page.console`."""
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.console = []
    page.on("console", lambda m: page.console.append(m.text))
    page.on("pageerror", lambda e: page.console.append(f"uncaught: {e}"))
    yield page
    context.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`lmforge server` on a fresh workspace, and `lmforge run` of the tiny lifecycle (fine-tuning
    on) on that workspace: it records its runs in that server and its MLflow runs in the
    workspace's mlflow.db, which the server's MLflow UI shows."""
    tmp = tmp_path_factory.mktemp("ui")
    proc, log, prefect_url, mlflow_url = start_server(tmp)
    try:
        wait_for_line(proc, log, "Ctrl-C stops both", timeout_s=240)
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
        sets = [a for s in (f"workspace={tmp / 'ws'}", *FAST) for a in ("--set", s)]
        run = subprocess.run(
            [LMFORGE, "run", "--config", str(CONFIG), *sets], env=env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stdout + run.stderr
        api = f"{prefect_url}/api"
        flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
        runs = {flows[r["flow_id"]]: r for r in httpx.post(f"{api}/flow_runs/filter", json={}).json()}
        yield SimpleNamespace(
            prefect=prefect_url, mlflow=mlflow_url, api=api, lifecycle=runs["lifecycle"], data=runs["data"], run=run
        )
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        kill_with_its_servers(proc)


def task_runs(served, flow_run: dict) -> list[dict]:
    found = httpx.post(f"{served.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    return [t for t in found.json() if t["name"].rsplit("-", 1)[0] in (*DATA_STAGES, *MODEL_STAGES)]


def artifacts(served) -> list[dict]:
    return httpx.post(f"{served.api}/artifacts/filter", json={}).json()


def open_tab(page, name: str) -> None:
    page.locator("li.p-tab", has_text=re.compile(rf"^{name}$")).click()


def console_errors(page) -> list[str]:
    return [m for m in page.console if "Invalid" in m or m.startswith("uncaught")]


def test_every_run_renders_in_prefects_ui_every_stage_task_listed_and_drawn(served, page):
    for flow_run, stages in ((served.lifecycle, MODEL_STAGES), (served.data, dict.fromkeys(DATA_STAGES, 1))):
        page.goto(f"{served.prefect}/runs/flow-run/{flow_run['id']}")
        open_tab(page, "Task Runs")
        for stage, count in stages.items():
            names = page.get_by_text(re.compile(rf"^{stage}-\w+$"))
            names.first.wait_for()
            assert names.count() == count, f"{stage} in the Task Runs tab of {flow_run['name']}"
        assert "No task runs" not in page.inner_text("body")
    assert not console_errors(page)

    tasks = task_runs(served, served.lifecycle) + task_runs(served, served.data)
    assert sorted(Counter(t["name"].rsplit("-", 1)[0] for t in tasks).items()) == sorted(
        {**MODEL_STAGES, **dict.fromkeys(DATA_STAGES, 1)}.items()
    )
    kinds = {i["input_type"] for t in tasks for inputs in t["task_inputs"].values() for i in inputs}
    assert kinds <= {"task_run", "parameter", "constant"}, "an input the UI cannot show (`flow_run`)"
    labels: dict[str, list[str]] = {"evaluate": [], "register": []}
    for t in tasks:
        stage = t["name"].rsplit("-", 1)[0]
        page.goto(f"{served.prefect}/runs/task-run/{t['id']}")
        page.get_by_text(t["name"], exact=True).first.wait_for()
        open_tab(page, "Artifacts")
        for key in ARTIFACTS.get(stage, []):
            page.get_by_text(key, exact=True).first.wait_for()
        if stage in ("evaluate", "register"):  # one for each model: its artifacts say which
            per_model = page.get_by_text(re.compile(rf"^{stage}-(metrics|decision)-(base|chat)$"))
            per_model.first.wait_for()
            labels[stage].append(per_model.first.inner_text().rsplit("-", 1)[1])
        assert not console_errors(page), f"the page of {t['name']}: {console_errors(page)}"
    assert {stage: sorted(seen) for stage, seen in labels.items()} == {s: ["base", "chat"] for s in labels}


def test_artifacts_are_told_apart_per_model_and_their_cells_show_what_the_data_holds(served, page):
    shown = artifacts(served)
    keys = {a["key"] for a in shown if a["key"]}
    for key in PER_MODEL:
        assert {f"{key}-base", f"{key}-chat"} <= keys, key
    ours = [a["key"] for a in shown if a["flow_run_id"] == served.lifecycle["id"] and a["type"] != "progress"]
    assert [k for k, n in Counter(ours).items() if n > 1 and k] == [], "one key for two things in one run"
    hint = [a for a in shown if a["flow_run_id"] == served.lifecycle["id"] and a["key"] is None]
    assert hint and "lmforge serve" in hint[0]["data"] and "lmforge deploy" in hint[0]["data"]

    latest = {a["key"]: a for a in sorted(shown, key=lambda a: a["created"]) if a["key"]}
    page.goto(f"{served.prefect}/artifacts/artifact/{latest['evaluate-samples-chat']['id']}")
    page.locator("th").first.wait_for()
    assert page.locator("th").all_inner_texts() == ["set", "prompt", "generation", "reference"]  # reading order
    rows = page.locator("tbody tr")
    assert rows.first.locator("td").first.inner_text() == "chat"  # the chat model's chats come first
    assert not [c for c in page.locator("tbody td").all_inner_texts() if "<|end|>" in c]

    # tokens such as "__" or "(self": markdown characters, shown as they are, not as bold or links
    stats = next(a for a in shown if a["key"] == "stats-top-tokens")
    tokens = [row["key"] for row in json.loads(stats["data"])]
    page.goto(f"{served.prefect}/artifacts/artifact/{stats['id']}")
    page.locator("tbody tr").first.wait_for()
    cells = page.locator("tbody tr td:first-child").all_inner_texts()
    assert [" ".join(c.split()) for c in cells] == [" ".join(unescape(t).split()) for t in tokens]
    assert any(set(unescape(t)) & set("_*`[<") for t in tokens), "no token that markdown would have changed"

    page.goto(f"{served.prefect}/artifacts/artifact/{latest['pretrain-stats']['id']}")
    page.locator("tbody tr").first.wait_for()
    floats = [c for c in page.locator("tbody td").all_inner_texts() if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", c)]
    digits = [re.sub(r"\D", "", f.partition("e")[0]).lstrip("0") for f in floats]
    assert floats and all(len(d) <= 4 for d in digits), floats  # 4 significant digits, not 16


def unescape(cell: str) -> str:
    """What an escaped cell says (lm_core/ui_text.py escapes with backslashes)."""
    return re.sub(r"\\(.)", r"\1", cell)


def test_links_lead_from_prefect_to_mlflows_training_runs_and_loss_curves_and_back(served, page):
    latest = {a["key"]: a for a in sorted(artifacts(served), key=lambda a: a["created"]) if a["key"]}
    page.goto(f"{served.prefect}/artifacts/artifact/{latest['register-decision-base']['id']}")
    experiment = page.get_by_role("link", name="MLflow experiment", exact=True)
    experiment.wait_for()
    assert experiment.get_attribute("href").startswith(served.mlflow)

    page.goto(experiment.get_attribute("href"))  # its training runs, not MLflow's GenAI overview or traces
    page.get_by_text(re.compile(r"^pretrain-\w+$")).first.wait_for()
    page.get_by_text(re.compile(r"^finetune-[\w-]+$")).first.wait_for()
    assert "/runs" in page.url and "traces" not in page.url.lower() and "genai" not in page.url.lower()
    page.get_by_text(re.compile(r"^(train/)?loss$")).first.wait_for()  # the title of its chart

    page.goto(f"{served.prefect}/artifacts/artifact/{latest['register-decision-chat']['id']}")
    run = page.get_by_role("link", name="MLflow run", exact=True)
    page.goto(run.get_attribute("href"))  # the chat model's MLflow run names the flow run that made it, linked
    back = page.get_by_role("link", name=served.lifecycle["name"], exact=True)
    back.wait_for()
    assert back.get_attribute("href") == f"{served.prefect}/runs/flow-run/{served.lifecycle['id']}"
    page.goto(back.get_attribute("href"))
    page.get_by_text("lifecycle", exact=True).first.wait_for()
    assert page.url.startswith(f"{served.prefect}/runs/flow-run/{served.lifecycle['id']}")
