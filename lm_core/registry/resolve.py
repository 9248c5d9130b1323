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

import json
import os
import re
import tempfile
from pathlib import Path

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from lm_core.model_artifacts import ModelArtifactNotFound, find_model_artifact
from lm_core.registry.pyfunc_model import MODEL_ARTIFACT
from lm_core.registry.register import registry_client
from lm_core.textgen import MODEL_FILES, TextModel
from lm_core.tracking import default_tracking_uri
from lm_core.train import checkpoint as ckpt
from lm_core.train.stage import RUN_ID_FILE
from lm_core.workspace import Workspace

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelNotFound(LookupError):
    """No model answers to the spec; the message names what was asked and what exists."""


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


def store_uri(tracking_uri: str | None, workspace: str | Path | None) -> str:
    """The MLflow store to look a registered model up in: the given URI, the workspace's own
    mlflow.db, or MLFLOW_TRACKING_URI; an absent SQLite file is an error, never created."""
    uri = tracking_uri or (default_tracking_uri(workspace) if workspace else os.environ.get("MLFLOW_TRACKING_URI"))
    if not uri:
        raise ModelNotFound("a models:/ spec needs a tracking URI or a workspace (whose mlflow.db holds the registry)")
    # MLflow creates a SQLite database it cannot find; a typo in a path must not leave one behind.
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ModelNotFound(f"no MLflow store at {uri}: nothing has been registered there")
    return uri


def registered_version(spec: str, tracking_uri: str) -> tuple[str, str]:
    """(name, version) of a `models:/<name>@<alias>` or `models:/<name>/<version>` spec."""
    m = _REGISTERED.match(spec)
    if not m:
        raise ModelNotFound(f"{spec!r} is not a registered model URI: use models:/<name>@<alias> or models:/<name>/<n>")
    client = registry_client(tracking_uri)
    name, alias, version = m["name"], m["alias"], m["version"]
    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        known = sorted(r.name for r in client.search_registered_models())
        raise ModelNotFound(
            f"no registered model {name!r} in {tracking_uri}; registered models: {', '.join(known) or 'none'}"
        ) from None
    if alias is not None:
        if alias not in model.aliases:
            have = ", ".join(f"@{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none"
            raise ModelNotFound(f"registered model {name!r} has no alias @{alias}; its aliases: {have}")
        return name, str(model.aliases[alias])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if int(version) not in versions:
        raise ModelNotFound(
            f"registered model {name!r} has no version {version}; its versions: "
            + (", ".join(map(str, versions)) or "none")
        )
    return name, version


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
    if (path / ckpt.WEIGHTS).is_file() and (path / ckpt.META).is_file():
        return _load_checkpoint(path, device, tracking_uri)
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise ModelNotFound(
        f"{path} is neither a model folder ({', '.join(MODEL_FILES)}) nor a checkpoint "
        f"({ckpt.WEIGHTS}, {ckpt.META}); it holds {found}"
    )


def _load_checkpoint(path: Path, device: str, tracking_uri: str | None) -> TextModel:
    """A training checkpoint: its weights, the model config kept in its meta.json, and the
    tokenizer of the training it belongs to."""
    meta = ckpt.read_meta(path)
    if "model" not in meta:
        raise ModelNotFound(f"{path / ckpt.META} holds no model config: not a model checkpoint")
    tokenizer = _checkpoint_tokenizer(path, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="lmforge-ckpt-") as tmp:
        folder = Path(tmp)
        (folder / "model_config.json").write_text(json.dumps(meta["model"]))
        for src, name in ((path / ckpt.WEIGHTS, ckpt.WEIGHTS), (tokenizer, "tokenizer.json")):
            os.symlink(src.resolve(), folder / name)
        loaded = TextModel.load(folder, device)
    loaded.source = str(path)
    return loaded


def _checkpoint_tokenizer(path: Path, tracking_uri: str | None) -> Path:
    """The checkpoint's own tokenizer.json or its training's (`<artifact>/checkpoints/step-N`);
    an unfinished training has none yet: its MLflow run names the chunk artifact that has it."""
    artifact = path.parent.parent
    for folder in (path, path.parent, artifact):
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    ws_root = artifact.parent.parent  # <workspace>/pretrain/.partial-<fp>
    if (artifact / RUN_ID_FILE).is_file():
        try:
            uri = store_uri(tracking_uri, ws_root)
            run = MlflowClient(uri).get_run((artifact / RUN_ID_FILE).read_text().strip())
        except (ModelNotFound, MlflowException):
            run = None
        chunk_fp = run.data.tags.get("lmforge.chunk") if run else None
        if chunk_fp and (ws_root / "chunk" / chunk_fp / "tokenizer.json").is_file():
            return ws_root / "chunk" / chunk_fp / "tokenizer.json"
    raise ModelNotFound(
        f"no tokenizer.json for checkpoint {path}: none beside it or in {artifact}, and its training's "
        "chunk artifact was not found; copy the training's tokenizer.json into the checkpoint folder"
    )
