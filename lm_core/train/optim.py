"""The optimizers and their learning-rate schedule, shared by pretraining (`loop.py`) and
fine-tuning (`lm_core.finetune.train`).

Two recipes. `adamw`: one AdamW and one rate for every parameter. `muon`: nanochat's split, Muon
(momentum orthogonalised by Newton-Schulz) for the 2-D matrices inside the blocks, and AdamW with
rates of their own for the embedding, the output layer and the norms' gains. Every group keeps
its `peak_lr`; the schedule scales them all by one factor."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass

import torch
import torch.nn as nn


def adamw(
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad; matrices (and embeddings) decay, norms' gains do not."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "peak_lr": lr},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "peak_lr": lr},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused)


@dataclass(frozen=True)
class MuonRates:
    """Peak rates of the `muon` recipe's groups."""

    matrix: float  # Muon, the blocks' matrices
    embedding: float  # AdamW
    head: float  # AdamW, the untied output layer (a tied one takes this rate too: it is the head)
    gain: float  # AdamW, the norms' gains

    @classmethod
    def for_width(
        cls,
        n_embd: int,
        matrix: float | None = None,
        embedding: float | None = None,
        head: float | None = None,
        gain: float | None = None,
    ) -> MuonRates:
        """nanochat's rates, for the ones not given: Muon's are per unit of spectral norm, so
        independent of width; the AdamW groups' shrink as 1/sqrt(width), set for width 768."""
        width = math.sqrt(768 / n_embd)
        head = head or 0.004 * width
        return cls(matrix=matrix or 0.02, embedding=embedding or 0.2 * width, head=head, gain=gain or head)

    def scaled(self, factor: float) -> MuonRates:
        """Every rate times `factor`: the same proportions at another strength (fine-tuning's)."""
        return MuonRates(*(rate * factor for rate in astuple(self)))


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan): SGD momentum (Nesterov), each update orthogonalised by five
    Newton-Schulz steps, scaled by sqrt(max(1, rows / cols)), decoupled weight decay. For 2-D
    weights only. As `torch.optim.Muon`, except that it orthogonalises in `ns_dtype` (torch's
    always casts to bf16: 3x slower on a CPU without native bf16, and coarse enough that
    accumulated and large-batch gradients part ways), and does matrices of one shape in one
    batched product."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.float32,
    ):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))
        self.ns_dtype = ns_dtype  # not a group setting: a checkpoint resumed elsewhere takes that machine's

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape: dict[torch.Size, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append(p)
            # Matrices of one shape are orthogonalised together: one batched product instead of
            # many small ones (a small model's matrices are too small to keep a CPU busy alone).
            for params in by_shape.values():
                updates = []
                for p in params:
                    state = self.state[p]
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    updates.append(p.grad.lerp(buf, group["momentum"]))  # Nesterov
                ortho = orthogonalised(torch.stack(updates), group["ns_steps"], self.ns_dtype)
                rows, cols = params[0].shape
                scale = group["lr"] * max(1.0, rows / cols) ** 0.5
                for p, update in zip(params, ortho, strict=True):
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.to(p.dtype), alpha=-scale)


def orthogonalised(g: torch.Tensor, steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to `g` (or to each of a stack of them), roughly (singular
    values land in about 0.7-1.2): Keller Jordan's quintic Newton-Schulz iteration, tuned to
    converge fast from small values, computed in `dtype`."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def muon_and_adamw(
    model: nn.Module,
    rates: MuonRates,
    tied: bool,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool | None = None,
    ns_dtype: torch.dtype = torch.float32,
) -> list[torch.optim.Optimizer]:
    """Muon for the blocks' 2-D weights (orthogonalised in `ns_dtype`), AdamW (no decay:
    nanochat's choice) for the rest. Names are matched by suffix, so a DDP- or compile-wrapped
    model works too."""
    matrices, embedding, head, gains = [], [], [], []
    for name, p in model.named_parameters():  # a tied head appears once, as the embedding
        if not p.requires_grad:
            continue
        if p.dim() < 2:
            gains.append(p)
        elif "blocks." in name:
            matrices.append(p)
        elif name.endswith("lm_head.weight") or (name.endswith("embed.weight") and tied):
            head.append(p)
        else:
            embedding.append(p)
    optimizers: list[torch.optim.Optimizer] = []
    if matrices:  # fine-tuning may freeze every block
        group = {"params": matrices, "peak_lr": rates.matrix}
        optimizers.append(Muon([group], lr=rates.matrix, weight_decay=weight_decay, ns_dtype=ns_dtype))
    groups = [
        {"params": ps, "lr": lr, "peak_lr": lr}
        for ps, lr in ((embedding, rates.embedding), (head, rates.head), (gains, rates.gain))
        if ps
    ]
    if groups:
        optimizers.append(torch.optim.AdamW(groups, betas=betas, eps=1e-10, weight_decay=0.0, fused=fused))
    return optimizers


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to `peak` over `warmup` steps, then cosine down to `floor` by the end of
    `steps`, or with `wsd` warmup-stable-decay: flat, then linear down to `floor` over the last
    `decay_steps`.

    `ends_at_floor`: the cosine's last step runs at `floor` (pretraining). Fine-tuning's cosine
    has always been one step behind it, ending a step short of `floor`; it keeps its rates."""

    peak: float
    floor: float
    warmup: int
    steps: int
    wsd: bool = False
    decay_steps: int = 1
    ends_at_floor: bool = True

    def lr_at(self, step: int) -> float:
        """The rate of step `step`, counted from 0."""
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.wsd:
            decay_start = self.steps - self.decay_steps
            if step < decay_start:
                return self.peak
            frac = (step - decay_start + 1) / self.decay_steps
            return self.peak + (self.floor - self.peak) * min(1.0, frac)
        done = step - self.warmup + (1 if self.ends_at_floor else 0)
        progress = min(1.0, done / max(1, self.steps - self.warmup))
        return self.floor + 0.5 * (self.peak - self.floor) * (1 + math.cos(math.pi * progress))


def scale_lrs(optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer], scale: float) -> None:
    """Every group at `scale` x its own peak rate."""
    for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * scale
