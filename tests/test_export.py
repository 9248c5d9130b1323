"""`lmforge export`: any model `generate` loads exports to transformers; a chat model's export
renders conversations with `apply_chat_template` into lmforge's own token ids and stops at its
end token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_registry import Store, build_model_folder
from typer.testing import CliRunner

from lm_core.config import RegistryConfig
from lm_core.export import ExportError, export_hf
from lm_core.model_folder import mark_chat_model
from lm_core.quantize import save_int8
from lm_core.registry.register import register_model
from lm_core.textgen import TextModel
from lm_core.tokenize.chat_template import ChatTemplate, Message
from lm_core.workspace import Workspace
from lmforge.cli import app

transformers = pytest.importorskip("transformers")

CONVERSATIONS = [
    [("user", "hello world")],
    [("system", "You answer in one line."), ("user", "What does the quick brown fox do?")],
    [
        ("system", "  Leading and trailing spaces stay.\n"),
        ("user", "the lazy dog"),
        ("assistant", "jumps over\nthe fox,  twice"),
        ("user", "and then? «ünïcode» 42"),
    ],
    [("user", "a"), ("assistant", "b"), ("user", "c\n\nd")],
]


def chat_folder(folder: Path, seed: int) -> Path:
    """A tiny chat model: random weights, lmforge's tokenizer, chat.json."""
    build_model_folder(folder, seed)
    mark_chat_model(folder)
    return folder


def hf_ids(tokenizer, conversation, add_generation_prompt: bool) -> list[int]:
    messages = [{"role": r, "content": c} for r, c in conversation]
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_an_exported_chat_model_renders_conversations_as_lmforge_does(tmp_path):
    source = chat_folder(tmp_path / "chat", seed=5)
    out = export_hf(source, tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    template = ChatTemplate(TextModel.load(source).tokenizer)
    for conversation in CONVERSATIONS:
        messages = [Message(r, c) for r, c in conversation]
        assert hf_ids(tokenizer, conversation, True) == template.prompt_ids(messages), conversation
        assert hf_ids(tokenizer, conversation, False) == template.render(messages).ids, conversation
    with pytest.raises(Exception, match="unknown role tool"):
        hf_ids(tokenizer, [("tool", "x")], True)
    with pytest.raises(Exception, match="system message may only come first"):
        hf_ids(tokenizer, [("user", "x"), ("system", "y")], True)

    # Its end of sequence is the end of a reply: transformers' generate stops where lmforge's does.
    end, eot = template.end_id, template.eot_id
    assert tokenizer.eos_token == "<|end|>" and tokenizer.eos_token_id == end
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == end
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [end, eot]
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = TextModel.load(source)
    prompt = template.prompt_ids([Message("user", "hello world")])
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt) :].tolist()
    expected = ours.model.generate([prompt], 12, temperature=0, stop_tokens=template.stop_ids)[0]
    assert theirs[: len(expected)] == expected
    assert theirs[len(expected) :] in ([], [end], [eot])  # stopped where lmforge stops, at its stop token


def test_a_base_model_exports_without_a_chat_template(tmp_path):
    out = export_hf(build_model_folder(tmp_path / "base", seed=1), tmp_path / "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "chat_template" not in config and config["eos_token"] == "<|endoftext|>"


def test_int8_models_and_foreign_folders_are_refused(tmp_path):
    int8 = build_model_folder(tmp_path / "int8", seed=2)
    model = TextModel.load(int8).model
    save_int8(model, int8)
    (int8 / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="int8 weights"):
        export_hf(int8, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()

    source = build_model_folder(tmp_path / "model", seed=3)
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(ExportError, match="does not hold an exported model"):
        export_hf(source, precious)
    assert (precious / "todo.txt").read_text() == "keep me"
    # A previous export is replaced whole.
    out = export_hf(source, tmp_path / "hf")
    (out / "stale.txt").write_text("from before")
    export_hf(source, out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()


def publish(ws: Workspace, stage: str, fingerprint: str, folder: Path) -> None:
    with ws.build(stage, fingerprint, config={}, inputs={}) as b:
        for f in folder.iterdir():
            (b.dir / f.name).write_bytes(f.read_bytes())


def test_export_takes_every_spec_generate_takes_and_latest_is_the_newest_model(tmp_path):
    ws = Workspace(tmp_path / "ws")
    base = build_model_folder(tmp_path / "base", seed=1)
    chat = chat_folder(tmp_path / "chat", seed=2)
    publish(ws, "pretrain", "aaaa1111bbbb2222", base)
    publish(ws, "finetune", "cccc3333dddd4444", chat)  # fine-tuning ran after pretraining
    store = Store(tmp_path / "mlflow")
    register_model(RegistryConfig(), store.uri, store.new_run(), chat, {"val_bpb": 2.0}, None, {}, name="talker")
    common = ["--set", f"workspace={ws.root}", "--set", f"tracking.tracking_uri={store.uri}"]

    def export(spec: str, name: str) -> Path:
        result = CliRunner().invoke(app, ["export", "--model", spec, "--out", str(tmp_path / name), *common])
        assert result.exit_code == 0, result.output
        return tmp_path / name

    def weights(folder: Path) -> torch.Tensor:
        return load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]

    chat_weights = TextModel.load(chat).model.embed.weight
    for spec in (
        "latest",
        "cccc33",
        "models:/talker@champion",
        "models:/talker/1",
        str(ws.root / "finetune" / "cccc3333dddd4444"),
    ):
        out = export(spec, f"hf-{len(list(tmp_path.iterdir()))}")
        assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text()), spec
        assert torch.equal(weights(out), chat_weights), spec
    out = export("aaaa11", "hf-base")
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    assert torch.equal(weights(out), TextModel.load(base).model.embed.weight)
    # `generate` reads latest the same way: the chat model, which answers as an assistant.
    result = CliRunner().invoke(app, ["generate", "hi", "-n", "3", "-t", "0", *common])
    assert result.exit_code == 0, result.output
    assert result.output == "hi" + TextModel.load(chat).reply([[Message("user", "hi")]], _greedy(3))[0] + "\n"

    result = CliRunner().invoke(
        app, ["export", "--model", "models:/talker@nope", "--out", str(tmp_path / "x"), *common]
    )
    assert result.exit_code == 1 and "error:" in result.output and "no alias @nope" in result.output
    assert not (tmp_path / "x").exists()


def _greedy(n: int):
    from lm_core.textgen import GenerationSettings

    return GenerationSettings(max_new_tokens=n, temperature=0.0, top_k=50)


def test_generate_refuses_what_the_context_cannot_hold(tmp_path):
    model = build_model_folder(tmp_path / "model", seed=4)  # a 64-token context
    result = CliRunner().invoke(app, ["generate", "hello", "--model", str(model), "-n", "100000"])
    assert result.exit_code == 1
    assert "context of 64 tokens" in result.output and "--max-new-tokens (100000)" in result.output
    assert "ask for at most" in result.output
    result = CliRunner().invoke(app, ["generate", "hello", "--model", str(model), "-t", "0"])  # default: what fits
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "recipe, architecture",
    [({}, "LlamaForCausalLM"), ({"qk_norm": True, "tie_embeddings": False}, "Qwen3ForCausalLM")],
    ids=["llama", "qk-norm-untied"],
)
def test_the_exported_weights_are_the_models(tmp_path, recipe, architecture):
    source = build_model_folder(tmp_path / "m", seed=9, **recipe)
    ours = TextModel.load(source)
    out = export_hf(ours, tmp_path / "hf")  # from the loaded model, as `lmforge export` does
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == architecture
    x = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        assert (ours.model(x)[0] - theirs(x).logits).abs().max().item() < 1e-4
