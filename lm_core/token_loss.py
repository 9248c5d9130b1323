"""Summed next-token loss, and the figures it gives: loss, perplexity, bits-per-byte.

    loss  = total nats / tokens scored           (natural log, as the training loss)
    ppl   = exp(loss)
    bpb   = total nats / ln 2 / UTF-8 bytes of the text scored

The training loop's validation and evaluation's perplexity count the same way, with `loss_totals`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

MAX_LOG_PPL = 50.0  # exp() of a diverged model's loss would overflow; report e**50 instead


@dataclass(frozen=True)
class Perplexity:
    """Summed next-token loss over the tokens scored, and the bytes of text they encode."""

    nats: float
    tokens: int
    bytes: float | None = None  # None: unknown, no bits-per-byte

    @property
    def loss(self) -> float:
        return self.nats / self.tokens

    @property
    def ppl(self) -> float:
        return math.exp(min(self.loss, MAX_LOG_PPL))

    @property
    def bpb(self) -> float | None:
        return self.nats / math.log(2) / self.bytes if self.bytes else None

    def metrics(self) -> dict[str, float]:
        """{"loss", "ppl", "bpb" (when the bytes are known), "tokens"}; empty if nothing was scored."""
        if self.tokens == 0:
            return {}
        out = {"loss": self.loss, "ppl": self.ppl, "tokens": self.tokens}
        if self.bpb is not None:
            out["bpb"] = self.bpb
        return out


def loss_totals(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Summed loss (nats) and the number of targets scored, as a float64 tensor on `device`.

    Each batch is (x, y) or (x, y, mask): the model's own `forward(x, y[, mask])` gives the mean
    loss over the (selected) targets, counted back into a sum. The totals stay on the device (no
    sync per batch) so that ranks can all-reduce them; the caller picks the grad mode, since
    training evaluates a wrapped (DDP/FSDP) model under `no_grad`."""
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in batches:
        x, y, *mask = (t.to(device, non_blocking=True) for t in batch)
        with autocast():
            _, loss = model(x, y, *mask)
        n = mask[0].sum() if mask else y.numel()
        totals[0] += loss.double() * n
        totals[1] += n
    return totals
