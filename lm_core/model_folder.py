"""The model folder: the files a trained model is kept in, written by pretraining and fine-tuning
and read by evaluation, chat, serving, export and the registry.

    model.safetensors        the weights (safetensors: plain tensors, nothing is unpickled)
    model_config.json        the GPTConfig (`GPT(GPTConfig(**json))`)
    tokenizer.json           the tokenizer the model was trained with
    chat.json                a chat model only: {"template": "lmforge-chat-v1"}: its prompts are
                             user messages rendered with the chat template
    model.int8.safetensors   an int8-compressed model holds this in place of model.safetensors

A pretrain or finetune artifact is a model folder (with its metrics and data beside these files),
and so is the `model` artifact of a registered model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lm_core.model import GPTConfig
from lm_core.tokenize.chat_template import CHAT_TEMPLATE
from lm_core.workspace import check_space, out_of_space, write_json_atomic

WEIGHTS = "model.safetensors"
CONFIG = "model_config.json"
TOKENIZER = "tokenizer.json"
CHAT = "chat.json"
INT8_WEIGHTS = "model.int8.safetensors"
MODEL_FILES = (WEIGHTS, CONFIG, TOKENIZER)


class WeightsError(RuntimeError):
    """A weights file that is missing, corrupt or does not fit the model; the message names the file."""


class ModelLoadError(RuntimeError):
    """A model folder that is incomplete, or whose tokenizer does not fit its weights."""


# ----------------------------------------------------------------------------- weights


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Weights as safetensors, tied tensors stored once (safetensors refuses shared storage).
    Written beside `path` and renamed into place: `path` holds whole weights or none; a disk
    without room for them raises DiskFullError (naming the folder) and leaves nothing behind."""
    out, seen = {}, set()
    for name, t in tensors.items():
        key = (t.data_ptr(), t.shape)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    needed = sum(t.nbytes for t in out.values()) + 128 * len(out)  # + the JSON header, roughly
    check_space(path.parent, needed, f"weights {path.name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(out, str(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = out_of_space(e, path.parent, f"weights {path.name}", needed)
        if full is not None and full is not e:
            raise full from e
        raise


def save_weights(model: torch.nn.Module, path: Path) -> None:
    save_tensors(model.state_dict(), path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"weights file {path} is corrupt: {e}") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`; tied weights may be stored once."""
    tensors = load_tensors(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {n for n in missing if n == "lm_head.weight" and getattr(model, "cfg", None) and model.cfg.tie_embeddings}
    missing = [n for n in missing if n not in tied]
    if missing or unexpected:
        raise WeightsError(f"weights file {path} does not fit the model: missing {missing}, unexpected {unexpected}")


# ----------------------------------------------------------------------------- the folder


def model_files(folder: Path) -> tuple[str, ...]:
    """The files a model in `folder` needs: float weights, or int8 ones for a compressed model."""
    if not (folder / WEIGHTS).is_file() and (folder / INT8_WEIGHTS).is_file():
        return (INT8_WEIGHTS, CONFIG, TOKENIZER)
    return MODEL_FILES


def missing_files(folder: Path) -> list[str]:
    return [f for f in model_files(folder) if not (folder / f).is_file()]


def read_config(folder: Path) -> GPTConfig:
    """The folder's GPTConfig; a file that is not one raises ModelLoadError naming it."""
    path = folder / CONFIG
    try:
        return GPTConfig(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{path} is not a valid model config: {e}") from None


def write_config(folder: Path, config: dict) -> None:
    """`config` is a GPTConfig's `to_dict()`."""
    write_json_atomic(folder / CONFIG, config)


def is_chat_model(folder: Path) -> bool:
    """Whether `folder` holds a chat model: a valid chat.json naming the template this lmforge knows."""
    path = folder / CHAT
    if not path.is_file():
        return False
    try:
        template = json.loads(path.read_text()).get("template")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid: {e}") from None
    if template != CHAT_TEMPLATE:
        raise ModelLoadError(f"{path}: unknown chat template {template!r}; this lmforge knows {CHAT_TEMPLATE!r}")
    return True


def mark_chat_model(folder: Path) -> None:
    write_json_atomic(folder / CHAT, {"template": CHAT_TEMPLATE})
