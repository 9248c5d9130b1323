"""Fine-tuning methods: LoRA and frozen layers train only what they should, merging changes nothing,
DPO and distillation move the model the right way, int8 keeps the model's quality in a quarter of
the bytes, and curricula are stable."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from lm_core import quantize
from lm_core.finetune import curriculum, lora, losses
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import load_weights, save_weights

V, T = 64, 16


def tiny(tie: bool = True, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=2, n_head=2, n_kv_head=2, n_embd=32, tie_embeddings=tie))


def counting(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable language: runs of consecutive ids (mod V) from random starts."""
    g = torch.Generator().manual_seed(seed)
    seq = (torch.randint(0, V, (n, 1), generator=g) + torch.arange(T + 1)) % V
    return seq[:, :-1], seq[:, 1:]


def train_steps(model: GPT, steps: int, lr: float, seed: int = 0) -> list[float]:
    """AdamW over *all* parameters with weight decay: a frozen parameter can only stay unchanged
    if it gets no gradient at all."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    idx, targets = counting(32, seed)
    history = []
    for _ in range(steps):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def snapshot(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained() -> GPT:
    """A tiny GPT that has learned to count: peaked predictions, unlike a fresh model's."""
    model = tiny(seed=3)
    losses_ = train_steps(model, 150, 1e-2, seed=3)
    assert losses_[-1] < 0.5 * losses_[0]
    return model.eval()


# ----------------------------------------------------------------------------- LoRA


def test_lora_model_equals_base_at_init_and_rejects_unknown_targets():
    model = tiny().eval()
    idx, _ = counting(4, 1)
    before, _ = model(idx)
    names = lora.apply_lora(model, ["q_proj", "v_proj", "down_proj"], rank=4, alpha=8)
    assert names == [f"blocks.{i}.{p}" for i in range(2) for p in ("attn.q_proj", "attn.v_proj", "mlp.down_proj")]
    after, _ = model(idx)
    assert torch.equal(before, after)  # B = 0: the update is exactly zero
    with pytest.raises(ValueError, match="qkv_proj"):
        lora.apply_lora(tiny(), ["q_proj", "qkv_proj"])
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.apply_lora(model, ["k_proj"])


@pytest.mark.parametrize("tie", [True, False])
def test_lora_trains_only_adapters_and_merges_into_a_plain_gpt(tie, tmp_path):
    model = tiny(tie)
    original = copy.deepcopy(model).eval()
    plain_keys = set(model.state_dict())
    lora.apply_lora(model, ["q_proj", "v_proj", "gate_proj"], rank=4, alpha=8, dropout=0.1)
    base = {k: v for k, v in snapshot(model).items() if "lora_" not in k}
    adapters = {k: v.clone() for k, v in lora.lora_state_dict(model).items()}
    assert len(adapters) == 2 * 3 * 2 and all(k.endswith((".lora_A", ".lora_B")) for k in adapters)
    assert lora.param_counts(model)["trainable"] == sum(t.numel() for t in adapters.values())

    history = train_steps(model, 8, 1e-2)
    assert history[-1] < history[0]
    now = model.state_dict()
    unchanged = [k for k, v in base.items() if torch.equal(v, now[k])]
    assert unchanged == list(base)  # every base weight bitwise as it was
    assert all(not torch.equal(v, now[k]) for k, v in adapters.items())

    model.eval()
    idx, _ = counting(4, 2)
    with torch.no_grad():
        adapted, _ = model(idx)
        with lora.adapters_disabled(model):  # the reference model, without a copy
            assert torch.equal(model(idx)[0], original(idx)[0])
        assert torch.equal(model(idx)[0], adapted)
    prompts = [[5, 6, 7], [9]]
    adapted_gen = model.generate(prompts, 6, temperature=0)  # the KV-cache path through the adapters
    lora.merge_lora(model)
    assert not lora.has_lora(model)
    assert set(model.state_dict()) == plain_keys
    with torch.no_grad():
        merged, _ = model(idx)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert model.generate(prompts, 6, temperature=0) == adapted_gen

    save_weights(model, tmp_path / "model.safetensors")  # saves and loads as an ordinary model
    fresh = tiny(tie, seed=9).eval()
    load_weights(fresh, tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], merged)


def test_lora_state_dict_reloads_into_a_freshly_wrapped_model():
    model = tiny()
    lora.apply_lora(model, ["o_proj"], rank=2, alpha=4)
    train_steps(model, 3, 1e-2)
    saved = lora.lora_state_dict(model)
    other = tiny()
    lora.apply_lora(other, ["o_proj"], rank=2, alpha=4)
    lora.load_lora_state_dict(other, saved)
    idx, _ = counting(2, 4)
    model.eval(), other.eval()
    assert torch.equal(model(idx)[0], other(idx)[0])
    with pytest.raises(ValueError, match="missing"):
        lora.load_lora_state_dict(other, {})


@pytest.mark.parametrize("tie", [True, False])
def test_frozen_embeddings_and_blocks_stay_bitwise_unchanged(tie):
    model = tiny(tie)
    counts = lora.freeze(model, embeddings=True, first_blocks=1)
    frozen_numel = model.embed.weight.numel() + sum(p.numel() for p in model.blocks[0].parameters())
    assert counts == {"frozen": frozen_numel, "trainable": model.num_params() - frozen_numel}
    before = snapshot(model)
    train_steps(model, 4, 1e-2)
    after = model.state_dict()
    frozen = {k for k in before if k.startswith(("embed.", "blocks.0."))}
    if tie:
        frozen.add("lm_head.weight")  # the same matrix as the embedding
    for k in before:
        assert torch.equal(before[k], after[k]) == (k in frozen), k
    with pytest.raises(ValueError, match="first_blocks"):
        lora.freeze(model, embeddings=False, first_blocks=3)


# ----------------------------------------------------------------------------- losses


def test_sequence_logprobs_sums_masked_target_logprobs():
    model = tiny().eval()
    idx, targets = counting(3, 5)
    mask = torch.zeros_like(targets, dtype=torch.bool)
    mask[:, 10:] = True
    padded = targets.masked_fill(~mask, -100)  # ignored positions may hold anything
    with torch.no_grad():
        got = losses.sequence_logprobs(model, idx, padded, mask)
        logp = model(idx)[0].float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(got, logp[:, 10:].sum(-1))


def test_dpo_loss_matches_the_formula():
    out = losses.dpo_loss(
        torch.tensor([-1.0, -4.0]),
        torch.tensor([-3.0, -2.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-2.0, -2.0]),
        0.5,
    )
    # row 0: rewards +0.5 / -0.5 (margin 1); row 1: -1 / 0 (margin -1)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.chosen_reward.item() == pytest.approx(-0.25)
    assert out.rejected_reward.item() == pytest.approx(-0.25)
    assert out.margin.item() == pytest.approx(0.0)
    assert out.accuracy.item() == 0.5


def preference_pairs(n: int, seed: int, prompt: int = 6):
    """Prompt: counting up from a random start. Chosen: it goes on counting up; rejected: it
    counts down instead. Returns (chosen, rejected) as (idx, targets, response mask)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, V, (n, 1), generator=g)
    up = (start + torch.arange(T + 1)) % V
    down = up.clone()
    down[:, prompt:] = (up[:, prompt - 1 : prompt] - torch.arange(1, T + 2 - prompt)) % V
    mask = torch.zeros(n, T, dtype=torch.bool)
    mask[:, prompt - 1 :] = True  # targets from position prompt on
    return (up[:, :-1], up[:, 1:], mask), (down[:, :-1], down[:, 1:], mask)


def test_dpo_training_raises_preference_accuracy_on_held_out_pairs():
    policy = tiny(seed=1)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    train_c, train_r = preference_pairs(32, 0)
    test_c, test_r = preference_pairs(32, 1)

    def step(chosen, rejected, grad: bool):
        with torch.no_grad():
            ref = [losses.sequence_logprobs(reference, *side) for side in (chosen, rejected)]
        with torch.enable_grad() if grad else torch.no_grad():
            pol = [losses.sequence_logprobs(policy, *side) for side in (chosen, rejected)]
        return losses.dpo_loss(pol[0], pol[1], ref[0], ref[1], beta=0.1)

    first = step(test_c, test_r, grad=False)
    assert first.loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(30):
        out = step(train_c, train_r, grad=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = step(test_c, test_r, grad=False)
    assert last.accuracy.item() >= 0.9
    assert last.loss.item() < 0.5 * first.loss.item()
    assert last.margin.item() > 0


def test_distillation_lowers_the_students_kl_to_a_fixed_teacher(trained):
    student = tiny(seed=7)
    idx, targets = counting(32, 11)
    with torch.no_grad():
        teacher_logits = trained(idx)[0]

    def kl() -> float:
        with torch.no_grad():
            return losses.distill_loss(student(idx)[0], teacher_logits, targets, temperature=1.0).kl.item()

    before = kl()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    for _ in range(25):
        out = losses.distill_loss(student(idx)[0], teacher_logits, targets, temperature=2.0, alpha=0.7)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert kl() < 0.3 * before


def test_distill_loss_terms_and_vocabulary_check():
    logits = torch.randn(2, 5, V)
    targets = torch.randint(0, V, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    same = losses.distill_loss(logits, logits.clone(), targets, mask, temperature=3.0, alpha=0.25)
    ce = F.cross_entropy(logits[mask], targets[mask])
    assert same.kl.item() == pytest.approx(0.0, abs=1e-6)
    assert same.loss.item() == pytest.approx(0.75 * ce.item(), rel=1e-5)
    other = torch.randn(2, 5, V)
    t = 2.0
    log_s, log_t = F.log_softmax(logits[mask] / t, -1), F.log_softmax(other[mask] / t, -1)
    kl = (log_t.exp() * (log_t - log_s)).sum() / 4  # KL(teacher || student) per masked token
    got = losses.distill_loss(logits, other, targets, mask, temperature=t, alpha=1.0)
    assert got.kl.item() == pytest.approx(kl.item(), rel=1e-5)
    assert got.loss.item() == pytest.approx(t**2 * kl.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(80 logits\).*\(64\)"):
        losses.distill_loss(logits, torch.randn(2, 5, 80), targets)


# ----------------------------------------------------------------------------- int8


def perplexity(model, idx, targets) -> float:
    with torch.no_grad():
        logits = model(idx)[0]
    return math.exp(F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1)).item())


def test_int8_keeps_perplexity_and_is_over_3x_smaller(trained, tmp_path):
    idx, targets = counting(64, 21)  # held out from training
    q = quantize.load_int8(quantize.int8_state(trained), trained.cfg)
    ppl_f, ppl_q = perplexity(trained, idx, targets), perplexity(q, idx, targets)
    assert ppl_f < 3  # a model that predicts, so the comparison means something
    assert abs(ppl_q - ppl_f) / ppl_f <= 0.02  # the tolerance: 2% relative perplexity
    prompts = [[3, 4, 5], [40, 41, 42, 43]]
    assert q.generate(prompts, 8, temperature=0) == trained.generate(prompts, 8, temperature=0)

    save_weights(trained, tmp_path / "model.safetensors")
    int8_file = quantize.save_int8(trained, tmp_path)
    assert int8_file == tmp_path / quantize.INT8_WEIGHTS
    assert (tmp_path / "model.safetensors").stat().st_size >= 3 * int8_file.stat().st_size

    report = quantize.compression_report(trained, q, idx[:4], new_tokens=4, repeats=1)
    assert report["size_ratio"] >= 3 and report["relative_logit_error"] < 0.05
    assert report["int8_loss"] == pytest.approx(report["float_loss"], abs=0.05)


@pytest.mark.parametrize("tie", [True, False])
def test_int8_safetensors_round_trip_gives_identical_outputs(tie, tmp_path):
    model = tiny(tie).eval()
    state = quantize.int8_state(model)
    assert state["embed.weight"].dtype == torch.int8 and state["blocks.1.mlp.up_proj.weight"].dtype == torch.int8
    assert state["norm.weight"].dtype == torch.float32
    assert ("lm_head.weight" in state) == (not tie)  # a tied head is the embedding, stored once
    (tmp_path / "model_config.json").write_text(json.dumps(model.cfg.to_dict()))
    quantize.save_int8(model, tmp_path)
    from_file = quantize.load_int8(tmp_path)  # config read from the folder
    from_dict = quantize.load_int8(state, model.cfg)
    idx, _ = counting(4, 8)
    with torch.no_grad():
        assert torch.equal(from_file(idx)[0], from_dict(idx)[0])
    dequantized = quantize.load_int8(tmp_path, dynamic=False)  # the float model rebuilt
    w = model.blocks[0].attn.k_proj.weight
    err = (dequantized.blocks[0].attn.k_proj.weight - w).abs().max()
    assert err <= w.abs().amax(dim=1).max() / 254 + 1e-7  # half a quantization step at most


def test_int8_refuses_float_checkpoints_and_lora_models(tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match="no int8 weights"):
        quantize.load_int8(model.state_dict(), model.cfg)
    lora.apply_lora(model, ["q_proj"])
    with pytest.raises(ValueError, match="merge_lora"):
        quantize.int8_state(model)


# ----------------------------------------------------------------------------- curriculum


def test_curriculum_orders_are_stable_and_deterministic():
    examples = ["ccc", "a", "bb", "d", "ee"]
    assert curriculum.order_by_length(examples) == [1, 3, 2, 4, 0]  # ties keep input order
    assert curriculum.order_by_length([[1, 2], [1]], key=len) == [1, 0]
    losses_ = [0.5, 0.1, 0.5, 0.1, 0.3]
    assert curriculum.order_by_teacher_loss(losses_) == [1, 3, 4, 0, 2]
    assert curriculum.curriculum_order(losses_, "teacher_loss") == [1, 3, 4, 0, 2]
    assert curriculum.curriculum_order([3, 1, 2], "length") == [1, 2, 0]
    assert curriculum.curriculum_order([3, 1, 2], "none") == [0, 1, 2]
    many = [i % 7 for i in range(100)]
    assert curriculum.curriculum_order(many, "length") == curriculum.curriculum_order(list(many), "length")
    with pytest.raises(ValueError, match="NaN"):
        curriculum.order_by_teacher_loss([0.1, float("nan")])
    with pytest.raises(ValueError, match="unknown curriculum mode"):
        curriculum.curriculum_order([1], "random")
