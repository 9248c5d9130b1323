"""A training checkpoint loaded as a `TextModel`: its weights, the model config kept in its
meta.json, and the tokenizer of the training it belongs to. Fine-tuning may start from one, and
`lmforge generate` may sample one, while the training still runs or after it was interrupted."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lm_core.model_folder import CONFIG, TOKENIZER, WEIGHTS
from lm_core.model_spec import ModelNotFound, store_uri
from lm_core.textgen import TextModel
from lm_core.tokenize.stage import TOKENIZER_FILE
from lm_core.train import checkpoint as ckpt


def load_checkpoint_model(path: Path, device: str, tracking_uri: str | None) -> TextModel:
    meta = ckpt.read_meta(path)
    if "model" not in meta:
        raise ModelNotFound(f"{path / ckpt.META} holds no model config: not a model checkpoint")
    tokenizer = _checkpoint_tokenizer(path, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="lmforge-ckpt-") as tmp:
        folder = Path(tmp)  # a model folder of links, for TextModel.load
        (folder / CONFIG).write_text(json.dumps(meta["model"]))
        for src, name in ((path / WEIGHTS, WEIGHTS), (tokenizer, TOKENIZER)):
            os.symlink(src.resolve(), folder / name)
        loaded = TextModel.load(folder, device)
    loaded.source = str(path)
    return loaded


def _checkpoint_tokenizer(path: Path, tracking_uri: str | None) -> Path:
    """The checkpoint's own tokenizer.json or its training's (`<artifact>/checkpoints/step-N`);
    an unfinished training has none yet: its MLflow run names the chunk artifact that has it."""
    artifact = path.parent.parent
    for folder in (path, path.parent, artifact):
        if (folder / TOKENIZER).is_file():
            return folder / TOKENIZER
    ws_root = artifact.parent.parent  # <workspace>/pretrain/.partial-<fp>
    try:
        chunk_fp = ckpt.training_chunk(path, store_uri(tracking_uri, ws_root))
    except ModelNotFound:
        chunk_fp = None
    if chunk_fp and (ws_root / "chunk" / chunk_fp / TOKENIZER_FILE).is_file():
        return ws_root / "chunk" / chunk_fp / TOKENIZER_FILE
    raise ModelNotFound(
        f"no tokenizer.json for checkpoint {path}: none beside it or in {artifact}, and its training's "
        "chunk artifact was not found; copy the training's tokenizer.json into the checkpoint folder"
    )
