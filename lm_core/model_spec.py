"""Which model a user means, from what they type.

    latest                       the newest model artifact of the workspace, pretrain or finetune,
                                 by when it was published: the chat model once fine-tuning ran
                                 (after the last pretraining), else the pretrained model
    <fingerprint prefix>         a model artifact by an unambiguous prefix of its fingerprint
    models:/<name>@<alias>       a registered model, traced back to the workspace artifact it was
    models:/<name>/<version>     registered from (its `lmforge.finetune` / `lmforge.pretrain` tags)
    <folder>                     a published model artifact's own folder

`lmforge generate`, `chat` and `export` (through `lm_core.registry.resolve`, which also loads
registered models and folders from outside the workspace), evaluation (`lmforge stage evaluate
--model`) and fine-tuning's `finetune.base` all answer a spec through `find_model_artifact`, so
a spec, `latest` included, means the same thing everywhere. MLflow is imported only for
`models:/` specs: a cached run that names its model by fingerprint never loads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lm_core.config import Config, default_tracking_uri
from lm_core.workspace import MANIFEST, ArtifactRef, Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient  # MLflow (about 1 s): only for models:/ specs

MODEL_STAGES = ("pretrain", "finetune")  # workspace stages whose artifacts are model folders
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelArtifactNotFound(LookupError):
    """No model artifact answers to the spec; the message names what was asked and what exists."""


class ModelNotFound(LookupError):
    """No model answers to the spec; the message names what was asked and what exists."""


# ----------------------------------------------------------------------------- workspace artifacts


def find_model_artifact(
    spec: str, ws: Workspace, tracking_uri: str | None = None, stages: tuple[str, ...] = MODEL_STAGES
) -> ArtifactRef:
    """The published artifact of one of `stages` that `spec` names (see the module docstring)."""
    if spec.startswith("models:/"):
        return _registered(spec, ws, tracking_uri, stages)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _folder(folder.resolve(), ws, stages)
    found = [a for stage in stages for a in ws.artifacts(stage)]
    if spec == "latest" and found:
        newest = max(found, key=lambda a: a["manifest"].get("created", ""))
        return ws.ref(newest["stage"], newest["fingerprint"])
    matches = [a for a in found if a["fingerprint"].startswith(spec)]
    if len(matches) == 1:
        return ws.ref(matches[0]["stage"], matches[0]["fingerprint"])
    if not found:
        raise ModelArtifactNotFound(
            f"{spec!r}: {ws.root} holds no model artifact ({', '.join(stages)}) yet: train one "
            "(lmforge run, lmforge stage pretrain) or name a model folder or models:/<name>@<alias>"
        )
    listing = ", ".join(f"{a['stage']}:{a['fingerprint'][:12]}" for a in (matches or found))
    what = "more than one" if matches else "no"
    raise ModelArtifactNotFound(f"{spec!r}: {what} model artifact matches in {ws.root}; model artifacts: {listing}")


def find_model(cfg: Config, spec: str | None, ws: Workspace) -> ArtifactRef:
    """The model artifact `spec` names (None: the latest), registered models looked up in the
    run's tracking store."""
    return find_model_artifact(spec or "latest", ws, cfg.tracking_uri)


def _folder(path: Path, ws: Workspace, stages: tuple[str, ...]) -> ArtifactRef:
    if (path / MANIFEST).is_file() and path.parent.name in stages and path.parent.parent == ws.root:
        return ws.ref(path.parent.name, path.name)
    raise ModelArtifactNotFound(f"{path} is not a published model artifact of {ws.root} ({'/, '.join(stages)}/)")


def _registered(spec: str, ws: Workspace, tracking_uri: str | None, stages: tuple[str, ...]) -> ArtifactRef:
    try:
        uri = store_uri(tracking_uri, ws.root)
        name, version = registered_version(spec, uri)
    except ModelNotFound as e:
        raise ModelArtifactNotFound(str(e)) from None
    tags = registry_client(uri).get_model_version(name, version).tags
    if tags.get("lmforge.quantized"):
        raise ModelArtifactNotFound(
            f"{spec} is models:/{name}/{version}, the {tags['lmforge.quantized']} copy of a workspace model: "
            "name the full-precision version (or its fingerprint) instead"
        )
    for stage in reversed(stages):  # a chat model's tags name its base too: itself first
        fp = tags.get(f"lmforge.{stage}")
        if fp and ws.is_published(stage, fp):
            return ws.ref(stage, fp)
    raise ModelArtifactNotFound(
        f"{spec} is models:/{name}/{version}, whose training artifact is not in {ws.root}: "
        "use the workspace that trained it, or name a workspace model"
    )


# ----------------------------------------------------------------------------- registered models


def registered_model_name(spec: str) -> str | None:
    """The name in a `models:/<name>@<alias>` or `models:/<name>/<version>` spec, else None."""
    m = _REGISTERED.match(spec)
    return m["name"] if m else None


def registry_client(tracking_uri: str) -> MlflowClient:
    """A client whose registry is the tracking store (never a process-wide registry URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


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
    from mlflow.exceptions import MlflowException  # MLflow: only for models:/ specs
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

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
