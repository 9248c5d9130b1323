"""AdamW and its learning-rate schedule, shared by pretraining (`loop.py`) and fine-tuning
(`lm_core.finetune.train`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused)


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
