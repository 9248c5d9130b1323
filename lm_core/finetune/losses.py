"""Fine-tuning objectives beyond next-token cross-entropy: preference (DPO) and distillation.

    sequence_logprobs   log p(response | prompt) per row, the quantity DPO compares
    dpo_loss            Direct Preference Optimization (Rafailov et al., 2023)
    distill_loss        knowledge distillation from a teacher's logits (Hinton et al., 2015)

All sums and softmaxes run in float32 whatever the autocast dtype: log-probabilities summed over
hundreds of tokens lose their differences in bf16.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def sequence_logprobs(
    model: nn.Module, idx: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) sum over the masked positions of log p(targets[b, t] | idx[b, :t+1]), in float32.

    Targets outside the mask may hold anything (padding, -100): they are never looked up."""
    logits, _ = model(idx)
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    mask = mask.bool()
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    # -cross_entropy is log_softmax + gather without materialising a (B, T, V) log-prob tensor.
    logp = -F.cross_entropy(logits.float().flatten(0, 1), safe.flatten(), reduction="none").view_as(safe)
    return (logp * mask).sum(dim=-1)


class DPOOut(NamedTuple):
    loss: torch.Tensor  # scalar, with grad
    chosen_reward: torch.Tensor  # mean of beta * (log pi - log ref) on chosen responses (no grad)
    rejected_reward: torch.Tensor  # same on rejected responses
    margin: torch.Tensor  # mean of chosen - rejected reward
    accuracy: torch.Tensor  # fraction of pairs whose chosen reward exceeds the rejected one


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DPOOut:
    """-log sigmoid(beta * [(pi_c - ref_c) - (pi_r - ref_r)]), averaged over the batch.

    Inputs are (B,) sequence log-probabilities (sequence_logprobs); the reference ones come from
    the frozen starting model and carry no gradient."""
    if beta <= 0:
        raise ValueError(f"DPO beta must be positive, not {beta}")
    chosen = beta * (policy_chosen.float() - ref_chosen.float().detach())
    rejected = beta * (policy_rejected.float() - ref_rejected.float().detach())
    loss = -F.logsigmoid(chosen - rejected).mean()
    chosen, rejected = chosen.detach(), rejected.detach()
    return DPOOut(
        loss=loss,
        chosen_reward=chosen.mean(),
        rejected_reward=rejected.mean(),
        margin=(chosen - rejected).mean(),
        accuracy=(chosen > rejected).float().mean(),
    )


class DistillOut(NamedTuple):
    loss: torch.Tensor  # scalar, with grad: alpha * T^2 * kl + (1 - alpha) * ce
    kl: torch.Tensor  # mean over masked tokens of KL(teacher_T || student_T) (no grad)
    ce: torch.Tensor  # mean over masked tokens of the student's cross-entropy on targets (no grad)


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> DistillOut:
    """Token-level distillation over the masked positions of (B, T, V) logits.

    The KL term is scaled by T^2 so its gradient keeps the same size as the temperature changes
    (Hinton et al.). The teacher must share the student's vocabulary (same tokenizer)."""
    if student_logits.size(-1) != teacher_logits.size(-1):
        raise ValueError(
            f"the teacher's vocabulary ({teacher_logits.size(-1)} logits) differs from the student's "
            f"({student_logits.size(-1)}): distillation needs the same tokenizer"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be positive, not {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha must be in [0, 1], not {alpha}")
    V = student_logits.size(-1)
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    m = mask.reshape(-1).bool()
    s = student_logits.float().reshape(-1, V)[m]
    t = teacher_logits.detach().float().reshape(-1, V)[m]
    n = max(int(m.sum()), 1)
    s_logp = F.log_softmax(s / temperature, dim=-1)
    t_logp = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(s_logp, t_logp, log_target=True, reduction="sum") / n
    ce = F.cross_entropy(s, targets.reshape(-1)[m], reduction="sum") / n
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return DistillOut(loss=loss, kl=kl.detach(), ce=ce.detach())
