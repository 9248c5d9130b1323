"""The fine-tuning loop: one device, one process (fine-tuning a model that pretrained on one
machine fits on one machine; pretraining is where `torchrun` pays off).

    sft      masked cross-entropy on the assistant tokens of rendered chats
    distill  the student's logits pulled towards the teacher's (KL at a temperature) mixed with
             cross-entropy, on the same chats
    dpo      the policy prefers chosen over rejected replies, against a frozen reference model

Batches come in a fixed order per epoch: the curriculum's (easy to hard) in the first epoch when
one is asked, a seeded shuffle otherwise. Held-out loss (and for DPO, preference accuracy and
reward margin; for distillation, KL to the teacher) is measured every `eval_every` steps.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lm_core.config import FinetuneConfig
from lm_core.finetune.batches import pack_batch, pad_batch, preference_batch
from lm_core.finetune.curriculum import curriculum_order
from lm_core.finetune.losses import distill_loss, dpo_loss, sequence_logprobs
from lm_core.model import GPT
from lm_core.progress import NullProgress, Progress
from lm_core.token_loss import MAX_LOG_PPL
from lm_core.tokenize.chat_template import ChatTemplate, RenderedChat
from lm_core.train.optim import MuonRates, Schedule, adamw, muon_and_adamw, scale_lrs
from lm_core.train.precision import autocast_precision, autocast_to, newton_schulz_dtype

PreferencePair = tuple[RenderedChat, RenderedChat]  # (chosen, rejected), rendered with one prompt


@dataclass
class FinetuneData:
    train: list  # RenderedChat (sft, distill) or PreferencePair (dpo)
    heldout: list


@dataclass
class FinetuneResult:
    steps: int
    seconds: float
    final: dict[str, float]  # the last held-out evaluation
    initial: dict[str, float]  # the held-out evaluation before the first step
    history: list[dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------- batches


def _groups(items: Sequence, cfg: FinetuneConfig, max_len: int) -> list[list]:
    """Consecutive items per micro-batch: `micro_batch` of them, or when packing, as many chats
    as fill `micro_batch` rows of `max_len` tokens."""
    if not (cfg.packing and cfg.method != "dpo"):
        return [list(items[i : i + cfg.micro_batch]) for i in range(0, len(items), cfg.micro_batch)]
    groups, current, size = [], [], 0
    budget = cfg.micro_batch * max_len
    for item in items:
        n = len(item.ids) + 1  # + the end-of-text between packed chats
        if current and size + n > budget:
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    return groups + ([current] if current else [])


def _tensors(group: list, cfg: FinetuneConfig, template: ChatTemplate, max_len: int, device) -> tuple:
    if cfg.method == "dpo":
        b = preference_batch(group, max_len, template.pad_id).stacked()
    elif cfg.packing:
        b = pack_batch(group, max_len, template.pad_id, template.eot_id)[:3]
    else:
        b = pad_batch(group, max_len, template.pad_id)
    return tuple(t.to(device) for t in b[:3])


def epoch_order(n: int, epoch: int, scores: list[float] | None, cfg: FinetuneConfig, seed: int) -> list[int]:
    if epoch == 0 and scores is not None and cfg.curriculum != "none":
        return curriculum_order(scores, cfg.curriculum)
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def micro_batches(
    data: list, cfg: FinetuneConfig, max_len: int, seed: int, scores: list[float] | None
) -> Iterator[list]:
    """Micro-batches forever, epoch after epoch."""
    epoch = 0
    while True:
        order = epoch_order(len(data), epoch, scores, cfg, seed)
        yield from _groups([data[i] for i in order], cfg, max_len)
        epoch += 1


def steps_for(data: list, cfg: FinetuneConfig, max_len: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = len(_groups(data, cfg, max_len))
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))


# ----------------------------------------------------------------------------- losses


def batch_loss(
    model: GPT, batch: tuple, cfg: FinetuneConfig, reference: GPT | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The method's loss on one micro-batch, and figures worth logging."""
    idx, targets, mask = batch
    if cfg.method == "sft":
        _, loss = model(idx, targets, mask)
        return loss, {"loss": loss.item()}
    if cfg.method == "distill":
        assert reference is not None
        logits, _ = model(idx)
        with torch.no_grad():
            teacher, _ = reference(idx)
        out = distill_loss(logits, teacher, targets, mask, cfg.distill_temperature, cfg.distill_alpha)
        return out.loss, {"loss": out.loss.item(), "kl": out.kl.item(), "ce": out.ce.item()}
    assert reference is not None  # dpo: the batch stacks chosen (first half) over rejected
    policy = sequence_logprobs(model, idx, targets, mask)
    with torch.no_grad():
        ref = sequence_logprobs(reference, idx, targets, mask)
    half = idx.shape[0] // 2
    out = dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], cfg.dpo_beta)
    return out.loss, {
        "loss": out.loss.item(),
        "reward_margin": out.margin.item(),
        "preference_accuracy": out.accuracy.item(),
        "chosen_reward": out.chosen_reward.item(),
        "rejected_reward": out.rejected_reward.item(),
    }


def resolved_precision(cfg: FinetuneConfig, device: torch.device) -> str:
    """`finetune.precision` on this device. fp16 is not offered: it would need a loss scaler."""
    return autocast_precision(device, cfg.precision).replace("fp16", "fp32")


@torch.no_grad()
def evaluate_heldout(
    model: GPT, data: list, cfg: FinetuneConfig, template: ChatTemplate, reference: GPT | None, device
) -> dict[str, float]:
    """Held-out figures, averaged over all held-out examples (token-weighted for losses)."""
    model.eval()
    totals: dict[str, float] = {}
    weight = 0.0
    unpacked, max_len = cfg.model_copy(update={"packing": False}), _max_len(model)  # one chat per row
    computes_in = resolved_precision(cfg, device)
    for group in _groups(data, unpacked, max_len):
        batch = _tensors(group, unpacked, template, max_len, device)
        with autocast_to(device, computes_in):
            _, figures = batch_loss(model, batch, cfg, reference)
        w = float(batch[2].sum()) if cfg.method != "dpo" else float(len(group))
        for k, v in figures.items():
            totals[k] = totals.get(k, 0.0) + v * w
        weight += w
    model.train()
    out = {f"heldout_{k}": v / max(weight, 1e-9) for k, v in totals.items()}
    if "heldout_loss" in out and cfg.method == "sft":
        out["heldout_ppl"] = math.exp(min(out["heldout_loss"], MAX_LOG_PPL))
    return out


def _max_len(model: GPT) -> int:
    return model.cfg.seq_len


# ----------------------------------------------------------------------------- the loop


def _optimizers(model: GPT, params: list[torch.nn.Parameter], cfg: FinetuneConfig) -> list[torch.optim.Optimizer]:
    """adamw: one rate for the trainable parameters. muon: pretraining's recipe (MuonRates) with
    every rate scaled so that the matrices' is `lr`: the groups keep their proportions."""
    if cfg.optimizer == "adamw":
        return [adamw(params, cfg.peak_lr, cfg.weight_decay, (0.9, 0.95))]
    default = MuonRates.for_width(model.cfg.n_embd)
    rates = default.scaled(cfg.peak_lr / default.matrix)
    ns_dtype = newton_schulz_dtype(model.embed.weight.device)
    return muon_and_adamw(model, rates, model.cfg.tie_embeddings, cfg.weight_decay, (0.9, 0.95), ns_dtype=ns_dtype)


def finetune(
    model: GPT,
    data: FinetuneData,
    cfg: FinetuneConfig,
    template: ChatTemplate,
    *,
    reference: GPT | None = None,
    scores: list[float] | None = None,
    seed: int = 0,
    log=None,
    progress: Progress = NullProgress(),
) -> FinetuneResult:
    """Train `model` in place (its trainable parameters: see `lora.freeze`/`apply_lora`).
    `reference` is the frozen teacher (distill) or reference policy (dpo); `scores` are the
    curriculum's difficulty per training example; `log(metrics, step)` receives the figures."""
    if not data.train:
        raise ValueError("no training examples: nothing to fine-tune on")
    torch.manual_seed(seed)
    device = model.embed.weight.device
    max_len = _max_len(model)
    if reference is not None:
        reference.eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("every parameter is frozen: nothing to fine-tune")
    optimizers = _optimizers(model, params, cfg)
    computes_in = resolved_precision(cfg, device)
    total = steps_for(data.train, cfg, max_len)
    # linear warmup, then cosine decay to `min_lr_ratio` of the peak
    lr = cfg.peak_lr
    schedule = Schedule(lr, lr * cfg.min_lr_ratio, cfg.warmup_steps, total, ends_at_floor=False)
    batches = micro_batches(data.train, cfg, max_len, seed, scores)
    log = log or (lambda metrics, step: None)

    initial = evaluate_heldout(model, data.heldout, cfg, template, reference, device) if data.heldout else {}
    log(initial, 0)
    history = [{"step": 0, **initial}]
    model.train()
    progress.start(total, "steps")
    t0 = time.perf_counter()
    final = initial
    for step in range(total):
        lr = schedule.lr_at(step)
        scale_lrs(optimizers, lr / schedule.peak)
        figures: dict[str, float] = {}
        for _ in range(cfg.grad_accum):
            with autocast_to(device, computes_in):
                loss, f = batch_loss(model, _tensors(next(batches), cfg, template, max_len, device), cfg, reference)
            (loss / cfg.grad_accum).backward()
            for k, v in f.items():
                figures[k] = figures.get(k, 0.0) + v / cfg.grad_accum
        if cfg.grad_clip:
            figures["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            log({**{f"train_{k}": v for k, v in figures.items()}, "lr": lr}, done)
        if data.heldout and (done % cfg.eval_every == 0 or done == total):
            final = evaluate_heldout(model, data.heldout, cfg, template, reference, device)
            log(final, done)
            history.append({"step": done, **{f"train_{k}": v for k, v in figures.items()}, **final})
        progress.advance()
        progress.describe(f"loss {figures.get('loss', float('nan')):.3f}")
    return FinetuneResult(total, time.perf_counter() - t0, final, initial, history)


def teacher_scores(model: GPT, chats: list[RenderedChat], template: ChatTemplate, batch: int = 16) -> list[float]:
    """The starting model's mean loss on each chat's assistant tokens: the teacher-loss curriculum
    learns what the model already finds easy first."""
    device = model.embed.weight.device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(chats), batch):
            idx, targets, mask = (
                t.to(device) for t in pad_batch(chats[i : i + batch], model.cfg.seq_len, template.pad_id)
            )
            logp = sequence_logprobs(model, idx, targets, mask)
            out += (-logp / mask.sum(dim=-1).clamp(min=1)).tolist()
    return out


def summary(result: FinetuneResult) -> dict[str, Any]:
    return {"steps": result.steps, "seconds": round(result.seconds, 1), **result.final}
