"""What every system of the bench shares: the run's settings, its result, and running a peer's
script with its log kept."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Setup:
    """The footing all systems share: lmforge's plan for the config, which the peers copy."""

    chunk_dir: Path  # the chunk artifact: train/ and val/ blocks, tokenizer.json, manifest
    vocab_size: int
    seq_len: int
    seed: int
    n_layer: int
    n_head: int
    n_embd: int
    micro_batch: int  # sequences per forward pass
    grad_accum: int  # forward passes per optimizer step
    steps: int

    @property
    def batch_tokens(self) -> int:
        return self.micro_batch * self.grad_accum * self.seq_len

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens


@dataclass
class Trained:
    """A system's final weights, ready to score, and how its training went."""

    system: str
    model: nn.Module  # forward(x, y) -> (logits or None, mean loss), as `lm_core.token_loss` expects
    context: int
    params: int
    steps: int
    tokens: int
    train_seconds: float
    notes: list[str] = field(default_factory=list)


class LossForward(nn.Module):
    """A peer's model as the scoring harness calls it: forward(x, y) -> (None, mean loss).

    The harness hands over slices of whole blocks (x = block[:-1], y = block[1:]), which are not
    contiguous; the peers' losses flatten the targets with `.view`, so they get contiguous copies."""

    def __init__(self, model: nn.Module, loss_of: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.loss_of = model, loss_of

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.loss_of(self.model, x.contiguous(), y.contiguous())


def count_params(model: nn.Module) -> int:
    """Every parameter once (a tied embedding and head count once): the same rule for all systems."""
    return sum(p.numel() for p in model.parameters())


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, label: str) -> list[str]:
    """Run a peer's script, its output kept in `log_path`; a failure shows the end of the log."""
    lines: list[str] = []
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip("\n"))
            if _is_progress(line, len(lines)):
                print(f"  [{label}] {line.strip()[:110]}", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"{label} exited with status {proc.returncode} (log: {log_path}):\n{tail}")
    return lines


def _is_progress(line: str, n: int) -> bool:
    """Echo a step line now and then, so that a long run shows it is alive."""
    m = re.match(r"(?:iter|step) 0*(\d+)[:/ ]", line)
    return bool(m) and int(m.group(1)) % 25 == 0 or "Traceback" in line or n <= 2
