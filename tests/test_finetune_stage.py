"""The finetune stage on a tiny pretrained model: SFT with LoRA on given chats, DPO on given
preferences, distillation into a smaller student, int8 compression; the chat model it publishes
loads as a chat model; bad data and bad bases stop it before anything is published."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FailAfter, Interrupted, pretrained_workspace
from pydantic import ValidationError

from lm_core.config import EvaluateConfig, FinetuneConfig, LoRAConfig, ModelConfig
from lm_core.evaluate.stage import run_evaluate
from lm_core.finetune.batches import pad_batch
from lm_core.finetune.stage import FinetuneError, finetune_fingerprint, resolve_base, run_finetune
from lm_core.model_folder import load_tensors
from lm_core.textgen import GenerationSettings, TextModel
from lm_core.tokenize.chat_template import ChatDataError, ChatTemplate, Conversation, Message
from lm_core.train.stage import run_pretrain

pytestmark = pytest.mark.slow

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry", "optimizer", "checkpoint"]
COLOURS = ["red", "green", "blue", "black", "white", "orange", "purple", "yellow"]


def chats_file(path, n=48):
    """Chats with one learnable rule: the answer names the colour the question names."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            c = COLOURS[i % len(COLOURS)]
            q = f"Which colour is the {TOPICS[i % len(TOPICS)]} number {i}?"
            turns = [
                {"role": "user", "content": f"{q} It is {c}."},
                {"role": "assistant", "content": f"The colour is {c}."},
            ]
            f.write(json.dumps({"messages": turns}) + "\n")
    return path


def preferences_file(path, n=48):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = f"Is step {i} of the {TOPICS[i % len(TOPICS)]} done?"
            f.write(json.dumps({"prompt": q, "chosen": "Yes, it is done.", "rejected": "The rows of blocks."}) + "\n")
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    cfg, ws, chunk, model = pretrained_workspace(
        root, TOPICS, 30, "pretrain.max_steps=10", "pretrain.lr=0.01", "chunk.seq_len=64"
    )
    return root, cfg, ws, model


def chunk_of(ref):
    return ref.manifest()["inputs"]["chunk"]


def configured(cfg, **finetune):
    return cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update=finetune)})


def test_sft_with_lora_publishes_a_chat_model_and_leaves_its_base_alone(pretrained):
    root, cfg, ws, base = pretrained
    before = load_tensors(base.dir / "model.safetensors")
    lora = LoRAConfig(rank=4, targets=["q_proj", "v_proj", "up_proj"])
    cfg = configured(cfg, chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=30, lr=1e-2, lora=lora)
    ref = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    assert ref.stats["source"] == "files" and ref.stats["heldout_loss"] < ref.stats["initial_heldout_loss"]
    assert ref.stats["trainable_params"] < ref.stats["params"] / 2  # adapters only
    chat = TextModel.load(ref.dir)
    question = [Message("user", "Which colour is the arrow number 3? It is red.")]
    replies = chat.reply([question], GenerationSettings(max_new_tokens=8))
    assert chat.is_chat and len(replies) == 1 and isinstance(replies[0], str)
    assert chat.generate(["Which colour is the arrow?"], GenerationSettings(max_new_tokens=8))[0] is not None
    # merged: a plain model folder with exactly the base model's tensors, no adapters
    assert set(load_tensors(ref.dir / "model.safetensors")) == set(before)
    after = load_tensors(base.dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (ref.dir / "data" / "heldout.jsonl").is_file() and (ref.dir / "data" / "train.jsonl").is_file()
    # an unchanged rerun is the published artifact
    again = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    assert again.fingerprint == ref.fingerprint and again.stats == ref.stats


def test_sft_autocasts_to_bf16_where_it_is_native_and_keeps_fp32_on_request(pretrained, monkeypatch):
    root, cfg, ws, base = pretrained
    cfg = configured(cfg, chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=20, lr=3e-3)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    native = run_finetune(configured(cfg, precision="auto"), resolve_base(cfg, base, ws), ws)
    fp32 = run_finetune(configured(cfg, precision="fp32"), resolve_base(cfg, base, ws), ws)
    assert (native.stats["precision"], fp32.stats["precision"]) == ("bf16", "fp32")
    for ref in (native, fp32):
        assert ref.stats["heldout_loss"] < 0.9 * ref.stats["initial_heldout_loss"]
    # the same training, rounded differently: close, but not the same numbers
    assert native.stats["heldout_loss"] == pytest.approx(fp32.stats["heldout_loss"], rel=0.05)
    assert native.stats["heldout_loss"] != fp32.stats["heldout_loss"]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    # a CPU that would emulate bf16 (one more step: the same config would reuse the first artifact,
    # as any cached stage is reused wherever `auto` would resolve otherwise)
    emulated = run_finetune(configured(cfg, precision="auto", max_steps=21), resolve_base(cfg, base, ws), ws)
    assert emulated.stats["precision"] == "fp32"


def test_sft_with_muon_lowers_the_heldout_loss_and_leaves_frozen_weights_alone(pretrained):
    root, cfg, ws, base = pretrained
    cfg = configured(cfg, chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=20, optimizer="muon",
                     lr=0.01, freeze_embeddings=True)  # fmt: skip
    ref = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    assert ref.stats["heldout_loss"] < ref.stats["initial_heldout_loss"]
    before, after = load_tensors(base.dir / "model.safetensors"), load_tensors(ref.dir / "model.safetensors")
    assert torch.equal(before["embed.weight"], after["embed.weight"])  # frozen: in no optimizer's groups
    assert not torch.equal(before["blocks.0.mlp.up_proj.weight"], after["blocks.0.mlp.up_proj.weight"])
    with pytest.raises(ValidationError, match="not low-rank adapters"):
        FinetuneConfig(optimizer="muon", lora=LoRAConfig(rank=4))


def test_sft_starts_from_a_checkpoint_of_an_interrupted_training(pretrained):
    root, cfg, ws, base = pretrained
    longer = cfg.model_copy(
        update={"pretrain": cfg.pretrain.model_copy(update={"max_steps": 12, "checkpoint_every": 4})}
    )
    chunk = ws.ref("chunk", chunk_of(base))
    with pytest.raises(Interrupted):
        run_pretrain(longer, chunk, ws, progress=FailAfter(6))
    (checkpoint,) = [p for p in (ws.root / "pretrain").glob(".partial-*/checkpoints/step-*")]
    tuned = configured(longer, base=str(checkpoint), chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=3)
    ref = run_finetune(tuned, resolve_base(tuned, None, ws), ws)
    assert ref.stats["base"].startswith("checkpoint:") and chunk_of(ref) == chunk.fingerprint
    assert TextModel.load(ref.dir).is_chat


def test_the_sft_loss_counts_assistant_tokens_only(pretrained):
    _, _, _, base = pretrained
    model = TextModel.load(base.dir)
    template = ChatTemplate(model.tokenizer)
    conv = Conversation.of(("user", "Which colour is the arrow?"), ("assistant", "The colour is red."))
    idx, targets, mask = pad_batch([template.render(conv)], model.context, template.pad_id)
    _, loss = model.model(idx, targets, mask)
    scrambled = torch.where(mask, targets, torch.randint_like(targets, model.model.cfg.vocab_size))
    _, loss_scrambled = model.model(idx, scrambled, mask)
    assert torch.equal(loss, loss_scrambled)
    assert mask.sum() == len(template.encode("The colour is red.")) + 1  # the reply and its <|end|>


def test_dpo_raises_preference_accuracy_on_held_out_pairs(pretrained):
    root, cfg, ws, base = pretrained
    cfg = configured(cfg, method="dpo", preference_files=[str(preferences_file(root / "prefs.jsonl"))],
                     max_steps=25, lr=3e-3, heldout_fraction=0.25)  # fmt: skip
    ref = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    assert ref.stats["initial_heldout_preference_accuracy"] <= 0.75
    assert ref.stats["heldout_preference_accuracy"] > 0.9
    assert ref.stats["heldout_reward_margin"] > 0
    assert (ref.dir / "data" / "heldout_preferences.jsonl").is_file()
    # evaluated like any model: the held-out preferences are scored, and kept for the champion
    scored = run_evaluate(EvaluateConfig(heldout_pairs=0, val_batches=2), ref, ws.ref("chunk", chunk_of(ref)), ws)
    assert scored.stats["preference_reward_accuracy.heldout"] > 0.9  # against the model it started from
    assert 0 <= scored.stats["preference_accuracy.heldout"] <= 1
    assert scored.stats["preference_pairs.heldout"] == ref.stats["heldout_examples"]
    assert (scored.dir / "preferences" / "heldout.jsonl").is_file()


def test_distillation_trains_a_smaller_student_closer_to_its_teacher(pretrained):
    root, cfg, ws, base = pretrained
    # a narrower student starts from noise (a same-width one would start from the teacher's blocks)
    student = ModelConfig(preset=None, depth=1, n_embd=32, n_head=2)
    cfg = configured(cfg, method="distill", chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=20,
                     lr=3e-3, student=student)  # fmt: skip
    ref = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    teacher = json.loads((base.dir / "model_config.json").read_text())
    student = json.loads((ref.dir / "model_config.json").read_text())
    assert student["n_layer"] < teacher["n_layer"]
    assert ref.stats["heldout_kl"] < ref.stats["initial_heldout_kl"]


def test_int8_compression_is_smaller_and_close(pretrained):
    root, cfg, ws, base = pretrained
    cfg = configured(cfg, chat_files=[str(chats_file(root / "chats.jsonl"))], max_steps=2, quantize=True)
    ref = run_finetune(cfg, resolve_base(cfg, base, ws), ws)
    report = ref.stats["int8"]
    assert report["size_ratio"] > 2.5
    assert abs(report["int8_loss"] - report["float_loss"]) / report["float_loss"] < 0.05
    assert (ref.dir / "int8" / "model.int8.safetensors").is_file()
    int8, full = TextModel.load(ref.dir / "int8"), TextModel.load(ref.dir)
    assert int8.is_chat and not (ref.dir / "int8" / "model.safetensors").exists()
    greedy = GenerationSettings(max_new_tokens=6)
    assert len(int8.generate(["Which colour is the arrow?"], greedy)) == len(full.generate(["Which?"], greedy)) == 1


def test_bad_chat_data_and_bad_bases_stop_before_anything_is_published(pretrained):
    root, cfg, ws, base = pretrained
    bad = root / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    before = {a["fingerprint"] for a in ws.artifacts("finetune")}
    with pytest.raises(ChatDataError, match="bad.jsonl:2"):
        run_finetune(configured(cfg, chat_files=[str(bad)]), base, ws)
    with pytest.raises(FinetuneError, match="cannot be read"):
        finetune_fingerprint(configured(cfg, chat_files=[str(root / "missing.jsonl")]), base, ws)
    with pytest.raises(FinetuneError, match="no model artifact matches"):
        resolve_base(configured(cfg, base="ffff0000"), None, ws)
    assert {a["fingerprint"] for a in ws.artifacts("finetune")} == before


def test_a_tokenizer_without_chat_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["plain text only"] * 10, trainers.BpeTrainer(vocab_size=300))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ChatDataError, match="lacks the chat tokens"):
        ChatTemplate(Tokenizer.from_file(str(tmp_path / "tokenizer.json")))
