"""The model registry: a registered model is a loadable pyfunc, the champion alias moves only
when the gate says so, and every way of naming a model loads it or says what exists."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from helpers import Interrupted
from mlflow import MlflowClient

from lm_core.config import RegistryConfig
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import save_weights
from lm_core.registry.gate import decide
from lm_core.registry.register import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    FINGERPRINT_TAG,
    REASON_TAG,
    current_champion,
    register_model,
)
from lm_core.registry.resolve import ModelNotFound, load_text_model
from lm_core.textgen import GenerationSettings, TextModel
from lm_core.tokenize.bpe import train_tokenizer
from lm_core.train.checkpoint import save_checkpoint
from lm_core.train.stage import RUN_ID_FILE
from lm_core.workspace import Workspace

PROMPTS = ["the quick brown fox", "hello"]
GREEDY = GenerationSettings(max_new_tokens=8)
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, a small corpus for a small tokenizer",
    "models are registered, evaluated and served",
] * 10


def build_model_folder(folder: Path, seed: int, **recipe) -> Path:
    """A tiny GPT with random weights, as a pretrain artifact lays it out; `recipe`: GPTConfig's
    other fields (qk_norm, tie_embeddings, ...)."""
    folder.mkdir(parents=True)
    tokenizer = train_tokenizer(TEXTS, vocab_size=320)
    tokenizer.save(str(folder / "tokenizer.json"))
    shape = dict(seq_len=64, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size(), **shape, **recipe)
    torch.manual_seed(seed)
    save_weights(GPT(cfg), folder / "model.safetensors")
    (folder / "model_config.json").write_text(json.dumps(cfg.to_dict()))
    return folder


class Store:
    """An MLflow store in a temporary folder, artifacts included."""

    def __init__(self, root: Path):
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(self.uri, registry_uri=self.uri)
        self.experiment = self.client.create_experiment("tests", artifact_location=str(root / "artifacts"))

    def new_run(self, tags: dict[str, str] | None = None) -> str:
        return self.client.create_run(self.experiment, tags=tags or {}).info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [build_model_folder(root / f"model-{seed}", seed) for seed in (1, 2, 3)]


def register(store: Store, model_dir: Path, name: str, bpb: float, bleu: float, champion_metrics=None, **kw):
    return register_model(
        RegistryConfig(min_bpb_gain=0.01, bleu_tolerance=0.5),
        store.uri,
        store.new_run(),
        model_dir,
        metrics={"val_bpb": bpb, "bleu.heldout": bleu},
        champion_metrics=champion_metrics,
        tags={"lmforge.data": "clean:ab12 crawl:cd34", "lmforge.tokenizer": "ef56"},
        name=name,
        **kw,
    )


@pytest.fixture(scope="module")
def lineage(store: Store, models: list[Path]) -> str:
    """Three versions of one model: a first, a worse one, a better one."""
    name = "lineage"
    first = register(store, models[0], name, bpb=2.00, bleu=10.0)
    assert first.champion and first.aliases == (CHALLENGER, CHAMPION)
    worse = register(store, models[1], name, bpb=2.10, bleu=12.0, champion_metrics={"val_bpb": 2.0, "bleu.heldout": 10})
    assert not worse.champion and worse.aliases == (CHALLENGER,)
    better = register(
        store, models[2], name, bpb=1.80, bleu=9.8, champion_metrics={"val_bpb": 2.0, "bleu.heldout": 10.0}
    )
    assert better.champion and better.model_uri == f"models:/{name}/3"
    return name


def test_the_champion_alias_moves_only_when_the_gate_says_so(store: Store, lineage: str):
    versions = {str(v.version): v for v in store.client.search_model_versions(f"name = '{lineage}'")}
    assert [versions[v].tags[DECISION_TAG] for v in ("1", "2", "3")] == [CHAMPION, CHALLENGER, CHAMPION]
    assert "no champion yet" in versions["1"].tags[REASON_TAG]
    assert versions["2"].tags[REASON_TAG].startswith("stays challenger, val_bpb not lower by enough: ")
    assert "val_bpb 2.1000 vs champion 2.0000, higher by 0.1000" in versions["2"].tags[REASON_TAG]
    assert versions["3"].tags[REASON_TAG].startswith("becomes champion: ")
    assert "bleu.heldout 9.80 vs champion 10.00, lower by 0.20" in versions["3"].tags[REASON_TAG]
    assert "compared with champion v1, scored on the same sets" in versions["3"].tags[REASON_TAG]
    assert versions["3"].tags["lmforge.data"] == "clean:ab12 crawl:cd34"
    assert "val_bpb 1.8" in versions["3"].description

    aliases = store.client.get_registered_model(lineage).aliases
    assert {a: str(v) for a, v in aliases.items()} == {CHAMPION: "3", CHALLENGER: "3"}
    champion = current_champion(store.uri, lineage)
    assert champion is not None and champion.version == "3" and champion.model_uri == f"models:/{lineage}/3"
    assert champion.metrics == {"val_bpb": 1.8, "bleu.heldout": 9.8}
    assert current_champion(store.uri, "never-registered") is None


def test_a_worse_model_leaves_the_champion_in_place(store: Store, models: list[Path]):
    name = "keeps-its-champion"
    register(store, models[0], name, bpb=2.0, bleu=10.0)
    # The champion has BLEU 10.0; 9.0 is worse by more than the tolerance, whatever the bpb gain.
    second = register(store, models[1], name, bpb=1.5, bleu=9.0, champion_metrics={"val_bpb": 2.0, "bleu.heldout": 10})
    assert not second.champion and "bleu.heldout lower by too much" in second.reason
    assert {a: str(v) for a, v in store.client.get_registered_model(name).aliases.items()} == {
        CHAMPION: "1",
        CHALLENGER: "2",
    }


def test_an_unscored_champion_is_compared_by_its_recorded_metrics(store: Store, models: list[Path]):
    name = "unscored"
    register(store, models[0], name, bpb=2.0, bleu=10.0)
    # No champion metrics from the caller: a champion exists all the same, and the gate uses what
    # was recorded when it was registered.
    second = register(store, models[1], name, bpb=2.5, bleu=10.0)
    assert not second.champion and "recorded at its registration, not re-scored" in second.reason
    assert current_champion(store.uri, name).version == "1"


def test_the_registered_model_and_its_versions_are_described(store: Store, models: list[Path]):
    name = "described"
    about = "A GPT-style language model, 1,234 parameters.\n\nTrained on chunk ab12: 4,000 tokens."
    register(store, models[0], name, bpb=2.0, bleu=10.0, about=about, model_description="described: test models.")
    assert store.client.get_registered_model(name).description == "described: test models."
    version = store.client.get_model_version(name, "1")
    assert version.description.startswith(about + "\n\nScores: bleu.heldout 10, val_bpb 2.")
    assert "Gate: no champion yet" in version.description
    # what a user wrote in MLflow's UI stays: a later registration describes its version only
    store.client.update_registered_model(name, description="Our demo model.")
    register(store, models[1], name, bpb=1.5, bleu=10.0, about=about, model_description="described: test models.")
    assert store.client.get_registered_model(name).description == "Our demo model."


@pytest.mark.parametrize(
    ("metrics", "champion", "promoted", "says"),
    [
        ({"val_bpb": 1.0}, None, True, "no champion yet"),
        ({"val_bpb": 1.995}, {"val_bpb": 2.0}, False, "val_bpb not lower by enough"),
        ({"val_bpb": 2.0}, {"val_bpb": 2.0}, False, "val_bpb 2.0000 vs champion 2.0000, equal"),
        ({"val_bpb": 1.98}, {"val_bpb": 2.0}, True, "bleu.heldout not compared"),
        ({"val_bpb": 1.9, "bleu.heldout": 9.6}, {"val_bpb": 2.0, "bleu.heldout": 10.0}, True, "becomes champion"),
        ({"val_bpb": 1.9, "bleu.heldout": 9.4}, {"val_bpb": 2.0, "bleu.heldout": 10.0}, False, "lower by too much"),
        ({"bleu.heldout": 30.0}, {"val_bpb": 2.0}, False, "missing for the challenger"),
        ({"val_bpb": float("nan")}, {"val_bpb": 2.0}, False, "missing for the challenger"),
    ],
)
def test_the_gate(metrics, champion, promoted, says):
    decision = decide(RegistryConfig(min_bpb_gain=0.01, bleu_tolerance=0.5), metrics, champion)
    assert decision.champion is promoted
    assert says in decision.reason


def test_the_champion_loads_and_generates_like_its_model_folder(store: Store, lineage: str, models: list[Path]):
    folder = TextModel.load(models[2])
    expected = folder.generate(PROMPTS, GREEDY)
    for spec in (f"models:/{lineage}@{CHAMPION}", f"models:/{lineage}/3"):
        loaded = load_text_model(spec, tracking_uri=store.uri)
        assert loaded.generate(PROMPTS, GREEDY) == expected
        assert torch.equal(loaded.model.embed.weight, folder.model.embed.weight)
    # Version 1 holds other weights: the alias really points at version 3.
    first = load_text_model(f"models:/{lineage}/1", tracking_uri=store.uri)
    assert not torch.equal(first.model.embed.weight, folder.model.embed.weight)


def test_the_registered_pyfunc_predicts_text(store: Store, lineage: str, models: list[Path], monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    uri = f"models:/{lineage}@{CHAMPION}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    out = pyfunc.predict(pd.DataFrame({"prompt": PROMPTS}), params={"max_new_tokens": 8})
    assert list(out.columns) == ["text"]
    assert out["text"].tolist() == TextModel.load(models[2]).generate(PROMPTS, GREEDY)

    # A column overrides `params` row by row; a null cell keeps the `params` value.
    rows = pd.DataFrame({"prompt": PROMPTS, "max_new_tokens": [2, None]})
    out = pyfunc.predict(rows, params={"max_new_tokens": 5})
    model = TextModel.load(models[2])
    assert out["text"].tolist() == [
        model.generate(PROMPTS[:1], GenerationSettings(max_new_tokens=2))[0],
        model.generate(PROMPTS[1:], GenerationSettings(max_new_tokens=5))[0],
    ]
    with pytest.raises(mlflow.exceptions.MlflowException, match="temperature must be >= 0"):
        pyfunc.predict(pd.DataFrame({"prompt": ["x"]}), params={"temperature": -1.0})

    # The logged model carries lm_core and pinned requirements: it loads without lmforge installed.
    files = Path(mlflow.artifacts.download_artifacts(uri))
    assert (files / "code" / "lm_core" / "textgen.py").is_file()
    assert f"torch=={torch.__version__.split('+')[0]}" in (files / "requirements.txt").read_text().split()


def test_a_workspace_fingerprint_or_a_folder_loads_the_model(tmp_path: Path, models: list[Path]):
    ws = Workspace(tmp_path / "workspace")
    with ws.build("pretrain", "0123abcd4567ef89", config={}, inputs={}) as b:
        for f in models[0].iterdir():
            (b.dir / f.name).write_bytes(f.read_bytes())
    expected = TextModel.load(models[0]).generate(PROMPTS, GREEDY)
    assert load_text_model("0123ab", workspace=ws.root).generate(PROMPTS, GREEDY) == expected
    assert load_text_model("latest", workspace=ws.root).generate(PROMPTS, GREEDY) == expected
    assert load_text_model(str(models[0])).generate(PROMPTS, GREEDY) == expected


def test_a_checkpoint_of_an_unfinished_training_loads(tmp_path: Path, store: Store, models: list[Path]):
    # An interrupted pretraining: checkpoints, no tokenizer yet; its MLflow run names the chunk.
    ws = tmp_path / "workspace"
    (ws / "chunk" / "c0ffee").mkdir(parents=True)
    (ws / "chunk" / "c0ffee" / "tokenizer.json").write_bytes((models[1] / "tokenizer.json").read_bytes())
    partial = ws / "pretrain" / ".partial-feed"
    (partial / RUN_ID_FILE).parent.mkdir(parents=True)
    (partial / RUN_ID_FILE).write_text(store.new_run({"lmforge.chunk": "c0ffee"}))
    model = TextModel.load(models[1]).model
    step = save_checkpoint(partial / "checkpoints", 10, model.state_dict(), {}, {"model": model.cfg.to_dict()}, keep=1)
    loaded = load_text_model(str(step), workspace=ws, tracking_uri=store.uri)
    assert loaded.generate(PROMPTS, GREEDY) == TextModel.load(models[1]).generate(PROMPTS, GREEDY)


def test_what_does_not_exist_is_named_with_what_does(store: Store, lineage: str, tmp_path: Path, models):
    def fails(spec: str, **kw) -> str:
        with pytest.raises(ModelNotFound) as e:
            load_text_model(spec, **kw)
        return str(e.value)

    message = fails("models:/nope@champion", tracking_uri=store.uri)
    assert "no registered model 'nope'" in message and lineage in message
    message = fails(f"models:/{lineage}@staging", tracking_uri=store.uri)
    assert "no alias @staging" in message and "@champion (v3)" in message and "@challenger (v3)" in message
    assert "its versions: 1, 2, 3" in fails(f"models:/{lineage}/7", tracking_uri=store.uri)
    assert "not a registered model URI" in fails("models:/a/b/c", tracking_uri=store.uri)
    missing_store = tmp_path / "nowhere" / "mlflow.db"
    assert "no MLflow store" in fails(f"models:/{lineage}@champion", tracking_uri=f"sqlite:///{missing_store}")
    assert not missing_store.parent.exists()

    ws = Workspace(tmp_path / "workspace")
    with ws.build("pretrain", "0123abcd4567ef89", config={}, inputs={}) as b:
        for f in models[0].iterdir():
            (b.dir / f.name).write_bytes(f.read_bytes())
    message = fails("beef", workspace=ws.root)
    assert "'beef': no model artifact matches" in message and "pretrain:0123abcd4567" in message
    assert "no workspace was given" in fails("beef")
    assert "no folder" in fails(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "is neither a model folder" in fails(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- interrupted registrations

TRAIN_STATS = {"train": {"documents": 40, "tokens": 4000, "blocks": 60}, "val": {"documents": 5, "tokens": 500}}


def chat_model_workspace(root: Path, model: Path) -> tuple:
    """A workspace holding what the register stage reads of a fine-tuned chat model with an int8
    copy (its chunk, the model, its evaluation), with no training: (config, workspace, evaluation)."""
    from lm_core.config import load_config
    from lm_core.model_folder import CONFIG, TOKENIZER, mark_chat_model
    from lm_core.quantize import save_int8

    ws = Workspace(root / "workspace")
    tokenize_fp, chunk_fp, finetune_fp, evaluate_fp = "1" * 16, "2" * 16, "3" * 16, "4" * 16
    with ws.build("chunk", chunk_fp, config={}, inputs={"tokenize": tokenize_fp}) as b:
        (b.dir / "tokenizer.json").write_bytes((model / TOKENIZER).read_bytes())
        b.stats = {**TRAIN_STATS, "seq_len": 64}
    with ws.build("finetune", finetune_fp, config={}, inputs={"pretrain": "5" * 16, "chunk": chunk_fp}) as b:
        for f in model.iterdir():
            (b.dir / f.name).write_bytes(f.read_bytes())
        mark_chat_model(b.dir)
        (b.dir / "int8").mkdir()
        save_int8(TextModel.load(model).model, b.dir / "int8")
        for f in (CONFIG, TOKENIZER, "chat.json"):
            (b.dir / "int8" / f).write_bytes((b.dir / f).read_bytes())
        report = {"size_ratio": 3.1, "generate_speedup": 1.2, "float_loss": 2.5, "int8_loss": 2.51}
        (b.dir / "int8" / "compression.json").write_text(json.dumps(report))
        b.stats = {"method": "sft", "base": f"pretrain:{'5' * 16}", "params": 50000, "steps": 20, "source": "qa"}
        b.stats |= {"train_examples": 90, "heldout_examples": 10}
    with ws.build("evaluate", evaluate_fp, config={}, inputs={"finetune": finetune_fp, "chunk": chunk_fp}) as b:
        metrics = {"val_loss": 3.0, "val_bpb": 2.0, "val_tokens": 500, "bleu.chat": 5.0, "pairs.chat": 4}
        (b.dir / "metrics.json").write_text(json.dumps(metrics))
    cfg = load_config(None, [f"workspace={ws.root}", "name=kills"])
    return cfg, ws, ws.ref("evaluate", evaluate_fp)


def registry_state(cfg) -> dict:
    """What a user sees of registered model kills-chat: each version's decision, key, quantization
    and float version; the aliases; the runs and logged models made for it."""
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    name = "kills-chat"
    versions = {
        str(v.version): {
            "decision": v.tags.get("lmforge.decision"),
            "quantized": v.tags.get("lmforge.quantized"),
            "key": v.tags[FINGERPRINT_TAG].replace(v.tags[FINGERPRINT_TAG][:16], "<fp>"),  # the store is in the fp
            "description": v.description.split("\n\n")[0],
        }
        for v in client.search_model_versions(f"name = '{name}'")
    }
    model = client.get_registered_model(name)
    experiment = client.get_experiment_by_name(cfg.experiment).experiment_id
    runs = client.search_runs([experiment])
    logged = client.search_logged_models([experiment])
    return {
        "versions": versions,
        "aliases": {a: str(v) for a, v in model.aliases.items()},
        "model description": bool(model.description),
        "runs": len(runs),
        "logged models": sorted((m.name, str(m.status)) for m in logged),
    }


def published_registration(ws: Workspace) -> dict:
    [found] = ws.artifacts("register")
    folder = Path(found["path"])
    registration = json.loads((folder / "registration.json").read_text())
    registration.pop("mlflow_run_id"), registration.pop("tracking_uri")  # the store's own: one per workspace
    return {"registration": registration, "comparison": json.loads((folder / "comparison.json").read_text())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, models: list[Path]):
    from lm_core.registry.stage import run_register

    cfg, ws, evaluation = chat_model_workspace(tmp_path_factory.mktemp("straight"), models[0])
    run_register(cfg, evaluation, ws)
    return registry_state(cfg), published_registration(ws)


def interrupt_at(monkeypatch, point: str) -> None:
    """Make the register stage stop at `point` as a crash would: the steps before it done."""
    from lm_core.registry import register, stage

    def stop(*args, **kwargs):
        raise Interrupted(point)

    if point == "logged model, no version":
        monkeypatch.setattr(register, "_ensure_registered_model", stop)
    elif point == "version, no aliases":
        monkeypatch.setattr(register, "_set_aliases", stop)
    elif point == "aliases, no int8 version":
        monkeypatch.setattr(stage, "_register_int8", stop)
    elif point == "int8 version, no @int8":
        set_aliases = register._set_aliases
        monkeypatch.setattr(
            register,
            "_set_aliases",
            lambda client, name, version, aliases: (
                stop() if aliases == ("int8",) else set_aliases(client, name, version, aliases)
            ),
        )
    elif point == "registered, not published":
        monkeypatch.setattr(stage, "write_json_atomic", stop)


@pytest.mark.parametrize(
    "point",
    [
        "logged model, no version",
        "version, no aliases",
        "aliases, no int8 version",
        "int8 version, no @int8",
        "registered, not published",
    ],
)
def test_a_registration_interrupted_anywhere_converges_on_rerun(tmp_path, models, uninterrupted, monkeypatch, point):
    from lm_core.registry.stage import run_register

    cfg, ws, evaluation = chat_model_workspace(tmp_path, models[0])
    with monkeypatch.context() as patched:
        interrupt_at(patched, point)
        with pytest.raises(Interrupted):
            run_register(cfg, evaluation, ws)
    assert ws.artifacts("register") == [], "an interrupted registration publishes nothing"
    run_register(cfg, evaluation, ws)
    state, published = uninterrupted
    assert registry_state(cfg) == state
    assert published_registration(ws) == published
    assert state["aliases"] == {"champion": "1", "challenger": "1", "int8": "2"}
    assert published["registration"]["aliases"] == ["challenger", "champion"]
    assert published["registration"]["int8_version"] == "2"


KILLED_REGISTRATION = """
import os, signal, sys
from lm_core.config import load_config
from lm_core.registry import register
from lm_core.registry.stage import run_register
from lm_core.workspace import Workspace

def killed(*args, **kwargs):  # MLflow has made the version; its aliases are next
    os.kill(os.getpid(), signal.SIGKILL)

register._set_aliases = killed
ws = Workspace(sys.argv[1])
run_register(load_config(None, [f"workspace={ws.root}", "name=kills"]), ws.resolve("evaluate"), ws)
"""


def test_a_registration_killed_after_mlflow_made_the_version_converges_on_rerun(tmp_path, models, uninterrupted):
    """kill -9 between MLflow's version and its aliases: the rerun publishes the champion that
    the registry holds, and registers the int8 copy."""
    import os
    import signal
    import subprocess
    import sys

    from lm_core.registry.stage import run_register

    cfg, ws, evaluation = chat_model_workspace(tmp_path, models[0])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, "-c", KILLED_REGISTRATION, str(ws.root)], env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'kills-chat'")] == ["1"]
    assert client.get_registered_model("kills-chat").aliases == {}

    run_register(cfg, evaluation, ws)
    state, published = uninterrupted
    assert registry_state(cfg) == state and published_registration(ws) == published
    reg = published["registration"]
    assert (reg["decision"], reg["aliases"], reg["int8_version"]) == ("champion", ["challenger", "champion"], "2")
