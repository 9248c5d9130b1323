"""The pretrain stage on real data-stage artifacts: tracked in MLflow (SQLite in a temp folder),
published with its tokenizer, exportable to transformers with identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import pretrained_workspace
from mlflow import MlflowClient

from lm_core.export import export_hf
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import load_weights
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.train.precision import fast_bf16
from lm_core.train.stage import run_pretrain

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry", "optimizer", "checkpoint"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    return pretrained_workspace(
        root, TOPICS, 60,
        "pretrain.max_steps=30", "pretrain.eval_every=10", "pretrain.checkpoint_every=10", "pretrain.log_every=5",
        "pretrain.lr=0.01", run_tags={"prefect.flow_run_id": "test-run"},
    )  # fmt: skip


def test_the_artifact_holds_weights_config_tokenizer_and_metrics(trained):
    cfg, ws, chunk, model = trained
    for name in (
        "model.safetensors",
        "model_config.json",
        "tokenizer.json",
        "train_state.pt",
        "metrics.json",
        "samples.json",
        "loss_curve.png",
    ):
        assert (model.dir / name).is_file(), name
    assert not (model.dir / "checkpoints").exists()
    assert model.stats["steps"] == 30 and model.stats["val_bpb"] > 0
    m = GPT(GPTConfig(**json.loads((model.dir / "model_config.json").read_text())))
    load_weights(m, model.dir / "model.safetensors")
    assert m.cfg.vocab_size == load_tokenizer(model.dir / "tokenizer.json").get_vocab_size()
    assert json.loads((model.dir / "samples.json").read_text())[0]["prompt"] == cfg.pretrain.sample_prompts[0]


def test_mlflow_has_params_step_metrics_artifacts_and_lineage(trained):
    cfg, ws, chunk, model = trained
    client = MlflowClient(f"sqlite:///{cfg.workspace.resolve() / 'mlflow.db'}")
    run = client.get_run(model.stats["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["pretrain.max_steps"] == "30" and run.data.params["model.preset"] == "tiny"
    assert int(run.data.params["plan.params"]) == model.stats["params"]
    assert run.data.params["gpt.n_embd"] == "64"
    # the precisions `auto` resolved to on this machine, which the config cannot say
    native = "bf16" if fast_bf16(torch.device("cpu")) else "fp32"
    assert run.data.params["plan.precision"] == run.data.params["plan.muon_precision"] == native
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [5, 10, 15, 20, 25, 30]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "val/bpb")} == {10, 20, 30}
    tags = run.data.tags
    assert tags["lmforge.chunk"] == chunk.fingerprint
    assert tags["lmforge.tokenizer"] == chunk.manifest()["inputs"]["tokenize"]
    assert "clean:" in tags["lmforge.data"] and "crawl:" in tags["lmforge.data"]
    assert tags["prefect.flow_run_id"] == "test-run"
    # artifacts live in the workspace beside the store, not wherever the command was started
    assert run.info.artifact_uri.startswith((cfg.workspace.resolve() / "mlartifacts").as_uri())
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "loss_curve.png", "metrics.json", "samples.json"} <= names


def test_a_second_run_returns_the_published_model(trained):
    cfg, ws, chunk, model = trained
    again = run_pretrain(cfg, chunk, ws)
    assert again == model


def test_hf_export_matches_our_logits(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    _, _, _, model = trained
    out = export_hf(model.dir, tmp_path / "hf")
    ours = GPT(GPTConfig(**json.loads((model.dir / "model_config.json").read_text()))).eval()
    load_weights(ours, model.dir / "model.safetensors")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert type(theirs).__name__ == "Qwen3ForCausalLM"  # the default recipe normalises queries and keys
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "The scheduler reads data in step 3"
    ids = load_tokenizer(model.dir / "tokenizer.json").encode(text).ids
    assert hf_tok(text)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        diff = (ours(x)[0] - theirs(x).logits).abs().max().item()
    assert diff < 1e-4


def test_export_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        export_hf(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_two_process_pretraining_through_torchrun_publishes_and_logs_once(trained, monkeypatch):
    cfg, ws, chunk, _ = trained
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg2 = cfg.model_copy(deep=True)
    cfg2.seed = 99  # another model
    cfg2.pretrain.max_steps = 6
    cfg2.pretrain.distributed.nproc = 2
    cfg2.pretrain.distributed.master_port = 29541
    model = run_pretrain(cfg2, chunk, ws)
    assert (model.dir / "model.safetensors").is_file() and model.stats["steps"] == 6
    client = MlflowClient(f"sqlite:///{cfg.workspace.resolve() / 'mlflow.db'}")
    run = client.get_run(model.stats["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["plan.world_size"] == "2"
    # one writer: each logged step appears once, not once per rank
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 6


@pytest.mark.slow
def test_two_nodes_train_one_model_and_only_node_0_logs_and_publishes(trained, monkeypatch):
    """Two "nodes" on this machine (one process each, gloo), as a team would launch the same
    command on each node of a cluster sharing the workspace: one MLflow run, one artifact."""
    from concurrent.futures import ThreadPoolExecutor

    cfg, ws, chunk, _ = trained
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = MlflowClient(f"sqlite:///{cfg.workspace.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(cfg.experiment).experiment_id
    runs_before = {r.info.run_id for r in client.search_runs(experiment)}

    def node(rank: int):
        c = cfg.model_copy(deep=True)
        c.seed, c.pretrain.max_steps = 7, 4  # another model
        d = c.pretrain.distributed
        d.nnodes, d.node_rank, d.master_port = 2, rank, 29547
        return run_pretrain(c, chunk, ws)

    with ThreadPoolExecutor(2) as pool:
        node0, node1 = pool.map(node, (0, 1))
    assert node0.fingerprint == node1.fingerprint and node1.dir == node0.dir
    assert node0.stats["steps"] == 4 and not list(node0.dir.glob("_spec-node*.json"))
    runs = {r.info.run_id for r in client.search_runs(experiment)}
    assert runs - runs_before == {node0.stats["mlflow_run_id"]}, "node 1 must open no MLflow run"
    assert client.get_run(node0.stats["mlflow_run_id"]).data.params["plan.world_size"] == "2"
