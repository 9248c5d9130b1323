"""What a user finds in MLflow after a pretraining, a fine-tuning, an evaluation and a
registration (SQLite store in a temporary workspace): an experiment marked as model training, so
that the UI opens it on its runs; training and validation curves as the first chart groups
(`train/*`, `val/*`), one-off scores after them and counts as tags; the data each run learned
from as dataset inputs; the code it ran as its source; descriptions on the registered model and
its versions, and each lineage tag once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import pretrained_workspace
from mlflow import MlflowClient

from lm_core.config import EvaluateConfig
from lm_core.evaluate.stage import run_evaluate
from lm_core.finetune.stage import resolve_base, run_finetune
from lm_core.registry.stage import run_register
from lm_core.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING
from lm_core.workspace import content_digest

pytestmark = pytest.mark.slow

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry"]
REPO = Path(__file__).resolve().parents[1]


def chats_file(path: Path, n: int = 24) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            turns = [{"role": "user", "content": f"What does the {topic} do?"}, {"role": "assistant", "content": topic}]
            f.write(json.dumps({"messages": turns}) + "\n")
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    cfg, ws, chunk, model = pretrained_workspace(
        root, TOPICS, 30, "pretrain.max_steps=8", "pretrain.eval_every=4", "pretrain.log_every=2", "name=layout"
    )
    ft = cfg.finetune.model_copy(update={"chat_files": [str(chats_file(root / "chats.jsonl"))], "max_steps": 4})
    ft = ft.model_copy(update={"eval_every": 2, "log_every": 1})
    cfg = cfg.model_copy(update={"finetune": ft})
    chat = run_finetune(cfg, resolve_base(cfg, model, ws), ws)
    evaluation = run_evaluate(EvaluateConfig(heldout_pairs=2, val_batches=2), model, chunk, ws)
    registered = run_register(cfg, evaluation, ws)
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    return cfg, ws, chunk, model, chat, registered, client


def test_the_experiment_opens_on_its_training_runs(tracked):
    cfg, *_, client = tracked
    assert client.get_experiment_by_name(cfg.experiment).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_training_curves_come_first_and_evaluation_scores_after(tracked):
    *_, model, chat, registered, client = tracked
    run = client.get_run(model.stats["mlflow_run_id"])
    keys = set(run.data.metrics)
    # MLflow's charts: groups by the part before the last "/", in alphabetical order, then the rest
    groups = sorted({k.rpartition("/")[0] for k in keys if "/" in k})
    assert groups == ["train", "val"], keys
    assert {"train/loss", "train/lr", "val/loss", "val/bpb", "val/ppl"} <= keys
    assert min(k for k in keys if k.startswith("train/")) == "train/loss"  # the first chart
    assert not {"loss", "lr", "val_loss", "val_bpb"} & keys
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [2, 4, 6, 8]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "val/bpb")} == {4, 8}
    # the evaluation: scores as metrics beside the curves, counts as tags
    assert "eval.val_bpb" in keys and "eval.bleu.heldout" in keys
    assert not any(k.startswith("eval.pairs.") or (k.startswith("eval.") and k.endswith("tokens")) for k in keys)
    assert run.data.tags["eval.pairs.heldout"] == "2" and int(run.data.tags["eval.val_tokens"]) > 0
    # fine-tuning: its training loss and held-out loss as the same two groups
    chat_keys = set(client.get_run(chat.stats["mlflow_run_id"]).data.metrics)
    assert {"train/loss", "train/lr", "val/loss"} <= chat_keys
    assert sorted({k.rpartition("/")[0] for k in chat_keys if "/" in k}) == ["train", "val"]


def dataset_inputs(client: MlflowClient, run_id: str) -> dict[str, dict]:
    found = {}
    for i in client.get_run(run_id).inputs.dataset_inputs:
        d = i.dataset
        context = {t.key: t.value for t in i.tags}["mlflow.data.context"]
        source = json.loads(d.source)["uri"]
        found[d.name] = {"digest": d.digest, "source": source, "context": context, "profile": json.loads(d.profile)}
    return found


def test_runs_name_their_data_and_their_source(tracked):
    cfg, ws, chunk, model, chat, registered, client = tracked
    pretrain = dataset_inputs(client, model.stats["mlflow_run_id"])
    assert pretrain == {
        "chunk-train": {
            "digest": chunk.fingerprint,
            "source": str(chunk.dir / "train"),
            "context": "training",
            "profile": pretrain["chunk-train"]["profile"],
        },
        "chunk-val": {
            "digest": chunk.fingerprint,
            "source": str(chunk.dir / "val"),
            "context": "validation",
            "profile": pretrain["chunk-val"]["profile"],
        },
    }
    assert pretrain["chunk-train"]["profile"]["blocks"] == chunk.stats["train"]["blocks"]

    finetune = dataset_inputs(client, chat.stats["mlflow_run_id"])
    assert {name: d["context"] for name, d in finetune.items()} == {
        "chats-train": "training",
        "chats-heldout": "validation",
    }
    for name, file in (("chats-train", "train.jsonl"), ("chats-heldout", "heldout.jsonl")):
        published = chat.dir / "data" / file  # the source is where the data lies once published
        assert finetune[name]["source"] == str(published) and published.is_file()
        assert finetune[name]["digest"] == content_digest([published])
    assert finetune["chats-train"]["profile"]["examples"] == chat.stats["train_examples"]

    tags = client.get_run(model.stats["mlflow_run_id"]).data.tags
    assert tags["mlflow.source.name"] == "lmforge pretrain"
    assert client.get_run(chat.stats["mlflow_run_id"]).data.tags["mlflow.source.name"] == "lmforge finetune"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # run from a checkout: the commit of the code
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()


def test_the_registry_describes_the_model_and_its_versions(tracked):
    cfg, ws, chunk, model, chat, registered, client = tracked
    reg = registered.stats
    docs = Path(cfg.crawl.files[0].path)
    described = client.get_registered_model(reg["name"]).description
    assert described.startswith(f"{reg['name']}: GPT-style language models pretrained by lmforge")
    assert f"the files under {docs}" in described and "@champion" in described

    version = client.get_model_version(reg["name"], reg["version"])
    assert f"{model.stats['params']:,} parameters" in version.description
    assert f"Trained on chunk {chunk.fingerprint}: {chunk.stats['train']['tokens']:,} tokens" in version.description
    assert "Scores: " in version.description and "bleu.heldout " in version.description
    assert "Gate: no champion yet" in version.description
    # each lineage tag once: the tokenizer's artifact as lmforge.tokenizer
    assert version.tags["lmforge.tokenizer"] == chunk.manifest()["inputs"]["tokenize"]
    assert "lmforge.tokenize" not in version.tags
