"""The finetune artifact's own files, beside its model folder, and what stops a fine-tuning.
Light (no torch): the stage's fingerprint, its heavy half and evaluation all read these names.

    data/train.jsonl                  the chats (or preference pairs) it learned from
    data/heldout.jsonl                held-out chats: evaluation scores BLEU/chrF on them
    data/heldout_preferences.jsonl    dpo: held-out preference pairs
    metrics.json                      held-out figures before and after, and the logged history
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = "data"
HELDOUT_CHATS = f"{DATA_DIR}/heldout.jsonl"
HELDOUT_PREFERENCES = f"{DATA_DIR}/heldout_preferences.jsonl"


class FinetuneError(ValueError):
    """A fine-tuning that cannot start: its base model or data are missing or unfit."""


def heldout_chats_file(model_dir: str | Path) -> Path | None:
    path = Path(model_dir) / HELDOUT_CHATS
    return path if path.is_file() else None


def heldout_preferences_file(model_dir: str | Path) -> Path | None:
    path = Path(model_dir) / HELDOUT_PREFERENCES
    return path if path.is_file() else None
