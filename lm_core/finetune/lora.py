"""Parameter-efficient fine-tuning: frozen layers and LoRA adapters (Hu et al., 2021).

    freeze(model, embeddings=True, first_blocks=2)     # train only the upper blocks
    apply_lora(model, ["q_proj", "v_proj"], rank=8, alpha=16, dropout=0.05)
    ... train: only the adapters (lora_A, lora_B) require grad ...
    lora_state_dict(model)                              # the adapters alone, for checkpoints
    with adapters_disabled(model): ...                  # the base model again (DPO's reference)
    merge_lora(model)                                   # back to a plain GPT, same keys as before

A wrapped projection computes `base(x) + dropout(x) @ A^T @ B^T * alpha / rank`. B starts at zero,
so the wrapped model equals the pretrained one until the first optimizer step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

# The GPT's projections that may carry an adapter (lm_head is left out: it may be the embedding).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def freeze(model: nn.Module, embeddings: bool, first_blocks: int) -> dict[str, int]:
    """Stop gradients to the token embedding (if `embeddings`) and the first `first_blocks` blocks.

    With tied embeddings the lm_head *is* the embedding matrix, so freezing one freezes both; an
    untied lm_head stays trainable. Only freezes: parameters already frozen stay frozen.
    Returns {"trainable": n, "frozen": n} parameter counts (a tied matrix counted once)."""
    n_layer = len(model.blocks)
    if not 0 <= first_blocks <= n_layer:
        raise ValueError(f"first_blocks must be between 0 and the model's {n_layer} blocks, not {first_blocks}")
    if embeddings:
        model.embed.weight.requires_grad_(False)
    for block in model.blocks[:first_blocks]:
        block.requires_grad_(False)
    return param_counts(model)


def param_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts; `parameters()` yields a tied matrix once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update B @ A, scaled by alpha / rank."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, not {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), not {dropout}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        # A as nn.Linear initialises its weight (and as PEFT does); B = 0 makes the update start at 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True  # False: the base projection alone (see `adapters_disabled`)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + update * self.scale

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W + scale * B @ A, computed in float32 and cast back to the base's dtype."""
        w = self.base.weight
        delta = self.lora_B.float() @ self.lora_A.float()
        return (w.float() + self.scale * delta).to(w.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def apply_lora(
    model: nn.Module, targets: list[str], rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
) -> list[str]:
    """Wrap every projection named in `targets` with a LoRALinear, in place, and freeze every
    other parameter (embedding, norms, head, untargeted projections). Returns the wrapped names."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {unknown}; allowed: {', '.join(LORA_TARGETS)}")
    if not targets:
        raise ValueError(f"give at least one LoRA target of: {', '.join(LORA_TARGETS)}")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters: merge_lora() it before adding new ones")
    model.requires_grad_(False)
    wanted = set(targets)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rpartition(".")[2] in wanted]
    for name in names:
        parent, child = _parent(model, name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each adapter into its base weight and put the plain nn.Linear back, in place.

    The result has exactly the GPT's own state_dict keys, so it saves, loads, exports and serves
    as an ordinary model. Parameters keep their requires_grad flags (frozen after apply_lora)."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, lora in wrapped:
        base = lora.base
        base.weight.copy_(lora.merged_weight())
        parent, child = _parent(model, name)
        setattr(parent, child, base)
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, the model computes as its frozen base: DPO's reference log-probs (or a teacher's
    logits) without keeping a second copy of the model in memory."""
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in wrapped:
        m.enabled = False
    try:
        yield model
    finally:
        for m in wrapped:
            m.enabled = True


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (`...q_proj.lora_A`, `...q_proj.lora_B`): a checkpoint of a LoRA
    run is these plus a reference to the frozen base model."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def load_lora_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights back into a model wrapped with the same apply_lora call."""
    expected = set(lora_state_dict(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"LoRA weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(tensors, strict=False)
