"""Checkpoints that load without unpickling anything.

    <dir>/step-000100/
        model.safetensors    the weights (safetensors: plain tensors, no code)
        train_state.pt       optimizer, schedule position, RNG states, data position:
                             tensors and plain containers only, read with weights_only=True
        meta.json            step, tokens seen, model config, whatever the caller adds

A checkpoint is written into a hidden temporary folder and renamed into place, so a run killed
while saving leaves the previous checkpoint as the latest whole one. Only the last `keep` stay.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS, STATE, META = "model.safetensors", "train_state.pt", "meta.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or unreadable; the message names the file."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Weights as safetensors, tied tensors stored once (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for name, t in tensors.items():
        key = (t.data_ptr(), t.shape)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    save_file(out, str(path))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    save_tensors(model.state_dict(), path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"weights file {path} is corrupt: {e}") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`; tied weights may be stored once."""
    tensors = load_tensors(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n in missing if n == "lm_head.weight" and getattr(model, "cfg", None) and model.cfg.tie_embeddings}
    missing = [n for n in missing if n not in tied]
    if missing or unexpected:
        raise CheckpointError(f"weights file {path} does not fit the model: missing {missing}, unexpected {unexpected}")


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / META).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    root: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_tensors(weights, tmp / WEIGHTS)
    torch.save(train_state, tmp / STATE)
    (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2, sort_keys=True, default=str))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in step_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_meta(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} is not a checkpoint (no {META})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ckpt / META} is corrupt: {e}") from None


def load_train_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {path} is missing") from None
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"training state {path} is corrupt or not a plain-tensor file: {e}") from None
