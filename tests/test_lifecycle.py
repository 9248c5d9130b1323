"""The whole tiny lifecycle through `lmforge run`, end to end: crawl the pydoc site, clean,
tokenize, chunk, pretrain, evaluate, register; against Prefect's embedded API and a SQLite MLflow
store in a temporary workspace. Then: an unchanged rerun is all cache hits and registers nothing;
a worse model stays challenger after the champion is scored on the same sets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterStartTime
from typer.testing import CliRunner

from lm_core.config import load_config
from lm_core.stages import STAGE_NAMES as STAGES
from lm_core.workspace import Workspace
from lmforge.cli import app

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

runner = CliRunner()
NAME = "lmforge-tiny"


def lmforge(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def stage_states_since(started: datetime) -> dict[str, str]:
    """The state of each stage task in the flow runs started since `started`."""
    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)))
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[f.id for f in flows])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs if r.name.rsplit("-", 1)[0] in STAGES}


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    ws = tmp_path_factory.mktemp("lifecycle") / "workspace"
    args = ("--config", "configs/tiny.yaml", "--set", f"workspace={ws}")
    output = lmforge("run", *args)
    return ws, args, output


def registration(ws, name: str = NAME) -> dict:
    """The newest registration of registered model `name`."""
    found = [a for a in Workspace(ws).artifacts("register") if a["manifest"]["stats"]["name"] == name]
    return json.loads((Path(found[0]["path"]) / "registration.json").read_text())


def test_the_lifecycle_registers_its_first_model_as_champion(lifecycle):
    ws, args, output = lifecycle
    published = {a["stage"] for a in Workspace(ws).artifacts()}
    assert published == set(STAGES)
    reg = registration(ws)
    assert (reg["name"], reg["version"], reg["champion"]) == (NAME, "1", True)
    assert f"models:/{NAME}/1" in output and "champion" in output
    assert "sample:" in output and "127.0.0.1:4200" in output and "127.0.0.1:5000" in output

    cfg = load_config("configs/tiny.yaml", [f"workspace={ws}"])
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    version = client.get_model_version(NAME, "1")
    pretrain = Workspace(ws).resolve("pretrain")
    assert version.tags["lmforge.pretrain"] == pretrain.fingerprint
    assert version.tags["lmforge.tokenizer"] and version.tags["lmforge.chunk"]
    # the evaluation went into the model's own training run, beside its training metrics
    run = client.get_run(version.run_id)
    evaluation = next(
        Workspace(ws).ref("evaluate", a["fingerprint"])
        for a in Workspace(ws).artifacts("evaluate")
        if "pretrain" in a["manifest"]["inputs"]
    )
    assert run.data.metrics["eval.val_bpb"] == pytest.approx(evaluation.stats["val_bpb"])
    assert float(version.tags["metric.val_bpb"]) == pytest.approx(evaluation.stats["val_bpb"])
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/samples.jsonl", "evaluation/results.md"} <= logged


def test_the_lifecycle_fine_tunes_a_chat_model_and_registers_it_with_lineage(lifecycle):
    ws, args, output = lifecycle
    finetuned = Workspace(ws).resolve("finetune")
    assert finetuned.stats["method"] == "sft" and finetuned.stats["source"] == "qa"
    assert finetuned.stats["heldout_loss"] < finetuned.stats["initial_heldout_loss"]
    reg = registration(ws, f"{NAME}-chat")
    assert (reg["version"], reg["champion"]) == ("1", True)
    assert f"models:/{NAME}-chat/1" in output and "chat model" in output
    chat_eval = [a for a in Workspace(ws).artifacts("evaluate") if "finetune" in a["manifest"]["inputs"]][0]
    assert chat_eval["manifest"]["stats"]["pairs.chat"] == finetuned.stats["heldout_examples"]

    cfg = load_config("configs/tiny.yaml", [f"workspace={ws}"])
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    version = client.get_model_version(f"{NAME}-chat", "1")
    assert version.tags["lmforge.finetune"] == finetuned.fingerprint
    assert version.tags["lmforge.base_model"] == f"models:/{NAME}/1"
    assert version.tags["lmforge.method"] == "sft"
    # the int8 copy is a version of its own, never champion, and loads as a chat model
    int8 = client.get_model_version_by_alias(f"{NAME}-chat", "int8")
    assert int8.tags["lmforge.quantized"] == "int8" and int8.tags["lmforge.float_version"] == "1"
    assert float(int8.tags["int8.size_ratio"]) > 2
    out = lmforge(
        "generate", "What is the json module?", "--model", f"models:/{NAME}-chat@int8", "-t", "0", "-n", "5", *args
    )
    assert out.startswith("What is the json module?")


def test_an_unchanged_rerun_is_all_cache_hits_and_registers_nothing_new(lifecycle):
    ws, args, _ = lifecycle
    manifests = {a["path"]: a["manifest"]["created"] for a in Workspace(ws).artifacts()}
    started = datetime.now(UTC)
    output = lmforge("run", *args)
    assert stage_states_since(started) == {stage: "Cached" for stage in STAGES}
    assert {a["path"]: a["manifest"]["created"] for a in Workspace(ws).artifacts()} == manifests
    assert f"models:/{NAME}/1" in output
    cfg = load_config("configs/tiny.yaml", [f"workspace={ws}"])
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == ["1"]
    assert sorted(str(v.version) for v in client.search_model_versions(f"name = '{NAME}-chat'")) == ["1", "2"]


def test_a_worse_model_stays_challenger_after_the_champion_is_scored_on_the_same_sets(lifecycle):
    ws, args, _ = lifecycle
    lmforge("run", *args, "--set", "pretrain.max_steps=2", "--set", "pretrain.eval_every=2")
    reg = registration(ws)
    assert (reg["version"], reg["champion"], reg["aliases"]) == ("2", False, ["challenger"])
    assert "stays challenger" in reg["reason"] and "scored on the same sets" in reg["reason"]
    newest = [a for a in Workspace(ws).artifacts("register") if a["manifest"]["stats"]["name"] == NAME][0]
    comparison = json.loads((Path(newest["path"]) / "comparison.json").read_text())
    assert comparison["champion_version"] == "1"
    rows = {r["metric"]: r for r in comparison["rows"]}
    assert rows["val_bpb"]["challenger"] > rows["val_bpb"]["champion"]
    # the champion's scores were measured again now, on the blocks and pairs of this evaluation
    first_eval = [a for a in Workspace(ws).artifacts("evaluate") if "pretrain" in a["manifest"]["inputs"]][-1]
    assert rows["val_bpb"]["champion"] == pytest.approx(first_eval["manifest"]["stats"]["val_bpb"], rel=1e-6)

    cfg = load_config("configs/tiny.yaml", [f"workspace={ws}"])
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "2"


def test_single_stages_rerun_on_artifacts_named_by_fingerprint_or_registered_model(lifecycle):
    ws, args, _ = lifecycle
    first_eval = [a for a in Workspace(ws).artifacts("evaluate") if "pretrain" in a["manifest"]["inputs"]][-1]
    first_model = first_eval["manifest"]["inputs"]["pretrain"]
    chunk = Workspace(ws).ref("pretrain", first_model).manifest()["inputs"]["chunk"]
    before = {a["path"] for a in Workspace(ws).artifacts()}
    started = datetime.now(UTC)

    # the champion, named by its registry alias, is traced to its artifact: its evaluation is cached
    out = lmforge("stage", "evaluate", "--model", f"models:/{NAME}@champion", *args)
    assert first_eval["fingerprint"] in out
    out = lmforge("stage", "pretrain", "--data", chunk[:10], *args)
    assert first_model in out
    assert stage_states_since(started) == {"evaluate": "Cached", "pretrain": "Cached"}
    assert {a["path"] for a in Workspace(ws).artifacts()} == before

    # an int8 copy is not a workspace model: the error says what to name instead
    result = runner.invoke(app, ["stage", "evaluate", "--model", f"models:/{NAME}-chat@int8", *args])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.exception  # no traceback
    assert "error:" in result.output and "int8 copy" in result.output


def test_every_artifact_names_the_flow_run_that_made_it(lifecycle):
    ws, args, _ = lifecycle
    origins = {a["path"]: a["manifest"]["origin"] for a in Workspace(ws).artifacts()}
    with get_client(sync_client=True) as client:
        for path, origin in origins.items():
            run = client.read_flow_run(origin["prefect_flow_run_id"])
            assert run.name == origin["prefect_flow_run_name"], path
            assert run.state.is_completed(), path
    # the data stages by the lifecycle's `data` subflow, the model stages by the lifecycle run itself
    by_flow = {Path(path).parent.name: o["prefect_flow"] for path, o in origins.items()}
    assert by_flow == {
        "crawl": "data", "clean": "data", "tokenize": "data", "chunk": "data", "stats": "data", "pretrain": "lifecycle",
        "finetune": "lifecycle", "evaluate": "lifecycle", "register": "lifecycle",
    }  # fmt: skip
    listed = [json.loads(line) for line in lmforge("ls", "--json", *args).splitlines()]
    assert {a["path"]: a["origin"] for a in listed} == origins


def test_generate_from_the_registered_champion_matches_its_workspace_artifact(lifecycle):
    ws, args, _ = lifecycle
    first_model = [a for a in Workspace(ws).artifacts("pretrain")][-1]["fingerprint"]
    common = ("--temperature", "0", "--max-new-tokens", "12", *args)
    from_registry = lmforge("generate", "The module", "--model", f"models:/{NAME}@champion", *common)
    from_workspace = lmforge("generate", "The module", "--model", first_model[:10], *common)
    assert from_registry == from_workspace and from_registry.startswith("The module")


def test_an_unknown_model_uri_is_named(lifecycle):
    ws, args, _ = lifecycle
    result = runner.invoke(app, ["generate", "hi", "--model", f"models:/{NAME}@nope", *args])
    assert result.exit_code == 1
    assert "no alias @nope" in result.output and "@champion" in result.output
