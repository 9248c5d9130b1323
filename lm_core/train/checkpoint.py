"""Checkpoints that load without unpickling anything.

    <dir>/step-000100/
        model.safetensors    the weights (safetensors: plain tensors, no code)
        train_state.pt       optimizer, schedule position, RNG states, data position:
                             tensors and plain containers only, read with weights_only=True
        meta.json            step, tokens seen, model config, whatever the caller adds (the
                             training's history, samples and last evaluation: plain JSON)

A checkpoint is written into a hidden temporary folder and renamed into place, so a run killed
while saving leaves the previous checkpoint as the latest whole one. Only the last `keep` stay.
A disk without room for a checkpoint raises DiskFullError naming the folder, before writing
anything when the shortfall is known in advance, and leaves no partial folder behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lm_core.model_folder import WEIGHTS, WeightsError, save_tensors
from lm_core.workspace import check_space, out_of_space

STATE, META = "train_state.pt", "meta.json"
RUN_ID_FILE = "_mlflow_run_id"  # in the training's folder, beside checkpoints/: its MLflow run
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(WeightsError):
    """A checkpoint that is missing, incomplete or unreadable; the message names the file."""


def is_checkpoint(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / META).is_file()


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
    what = f"checkpoint {final.name}"
    needed = tensor_bytes(weights) + tensor_bytes(train_state)
    check_space(root, needed, what)
    tmp.mkdir()
    try:
        save_tensors(weights, tmp / WEIGHTS)
        _save_state(train_state, tmp / STATE)
        (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2, sort_keys=True, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # frees what it took; the previous checkpoint stays the last
        full = out_of_space(e, root, what, needed)
        if full is not None and full is not e:
            raise full from e
        raise
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in step_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


class _KeptWriteError:
    """A file for torch.save that keeps the OSError of a failed write: torch reports one as a
    RuntimeError without its errno, and a full disk must be told from other failures."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _save_state(state: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:
        out = _KeptWriteError(f)
        try:
            torch.save(state, out)
        except RuntimeError as e:
            if out.error is not None:
                raise out.error from e
            raise


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in `obj` (nested dicts, lists and tuples): what saving it takes."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


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


def training_chunk(ckpt: Path, tracking_uri: str) -> str | None:
    """The chunk artifact the training of checkpoint `ckpt` (`<training>/checkpoints/step-N`)
    learned from: its MLflow run's `lmforge.chunk` tag; None when the run cannot be found."""
    from mlflow import MlflowClient  # MLflow: only to find a checkpoint's data
    from mlflow.exceptions import MlflowException

    run_file = ckpt.parent.parent / RUN_ID_FILE
    if not run_file.is_file():
        return None
    try:
        return MlflowClient(tracking_uri).get_run(run_file.read_text().strip()).data.tags.get("lmforge.chunk")
    except MlflowException:
        return None
