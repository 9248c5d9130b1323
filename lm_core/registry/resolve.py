"""Find a model from what a user types and load it as a `TextModel`.

A spec is one of:

    models:/<name>@<alias>      a registered model by alias (champion, challenger, ...)
    models:/<name>/<version>    a registered model by version number
    <folder>                    a model folder (model.safetensors, model_config.json,
                                tokenizer.json), or a training checkpoint (checkpoints/step-N)
    <fingerprint>|latest        a model artifact of the workspace (pretrain, later finetune),
                                by an unambiguous prefix of its fingerprint

Registered models are downloaded with MLflow and loaded with `TextModel.load`: the weights come
from safetensors and nothing is unpickled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow.artifacts

from lm_core.model_folder import MODEL_FILES
from lm_core.model_spec import (
    ModelArtifactNotFound,
    ModelNotFound,
    find_model_artifact,
    registered_version,
    registry_client,
    store_uri,
)
from lm_core.registry.pyfunc_model import MODEL_ARTIFACT
from lm_core.textgen import TextModel
from lm_core.train import checkpoint as ckpt
from lm_core.train.checkpoint_model import load_checkpoint_model
from lm_core.workspace import Workspace


def load_text_model(
    spec: str, workspace: str | Path | None = None, tracking_uri: str | None = None, device: str = "cpu"
) -> TextModel:
    """Load the model `spec` names (see the module's docstring). `tracking_uri` defaults to the
    workspace's MLflow store, then to MLFLOW_TRACKING_URI."""
    if spec.startswith("models:/"):
        return _load_registered(spec, store_uri(tracking_uri, workspace), device)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path, device, tracking_uri)
    if os.sep in spec or spec.startswith((".", "~")):
        raise ModelNotFound(f"no folder {path}")
    if workspace is None:
        raise ModelNotFound(f"{spec!r} is not a models:/ URI or a folder, and no workspace was given to look it up in")
    try:
        found = find_model_artifact(spec, Workspace(workspace), tracking_uri)
    except ModelArtifactNotFound as e:
        raise ModelNotFound(str(e)) from None
    return TextModel.load(found.path, device)


# ----------------------------------------------------------------------------- registry


def _load_registered(spec: str, tracking_uri: str, device: str) -> TextModel:
    name, version = registered_version(spec, tracking_uri)
    client = registry_client(tracking_uri)
    source = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="lmforge-model-") as tmp:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{source.rstrip('/')}/artifacts/{MODEL_ARTIFACT}", dst_path=tmp, tracking_uri=tracking_uri
        )
        loaded = TextModel.load(folder, device)
    loaded.source = f"models:/{name}/{version}"
    return loaded


# ----------------------------------------------------------------------------- folders


def _load_folder(path: Path, device: str, tracking_uri: str | None) -> TextModel:
    if all((path / f).is_file() for f in MODEL_FILES):
        return TextModel.load(path, device)
    if ckpt.is_checkpoint(path):
        return load_checkpoint_model(path, device, tracking_uri)
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise ModelNotFound(
        f"{path} is neither a model folder ({', '.join(MODEL_FILES)}) nor a checkpoint "
        f"({ckpt.WEIGHTS}, {ckpt.META}); it holds {found}"
    )
