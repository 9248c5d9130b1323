"""Which model artifact of a workspace a user means, from what they type.

    latest                       the newest model artifact (pretrain or finetune)
    <fingerprint prefix>         a model artifact by an unambiguous prefix of its fingerprint
    models:/<name>@<alias>       a registered model, traced back to the workspace artifact it was
    models:/<name>/<version>     registered from (its `lmforge.finetune` / `lmforge.pretrain` tags)
    <folder>                     a published model artifact's own folder

Evaluation (`lmforge stage evaluate --model`), fine-tuning's `finetune.base` and loading by
fingerprint all answer a spec through `find_model_artifact`, so a spec means the same thing
everywhere. MLflow is imported only for `models:/` specs.
"""

from __future__ import annotations

from pathlib import Path

from lm_core.workspace import MANIFEST, ArtifactRef, Workspace

MODEL_STAGES = ("pretrain", "finetune")  # workspace stages whose artifacts are model folders


class ModelArtifactNotFound(LookupError):
    """No model artifact answers to the spec; the message names what was asked and what exists."""


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
    listing = ", ".join(f"{a['stage']}:{a['fingerprint'][:12]}" for a in (matches or found)) or "none"
    what = "more than one" if matches else "no"
    raise ModelArtifactNotFound(f"{spec!r}: {what} model artifact matches in {ws.root}; model artifacts: {listing}")


def _folder(path: Path, ws: Workspace, stages: tuple[str, ...]) -> ArtifactRef:
    if (path / MANIFEST).is_file() and path.parent.name in stages and path.parent.parent == ws.root:
        return ws.ref(path.parent.name, path.name)
    raise ModelArtifactNotFound(f"{path} is not a published model artifact of {ws.root} ({'/, '.join(stages)}/)")


def _registered(spec: str, ws: Workspace, tracking_uri: str | None, stages: tuple[str, ...]) -> ArtifactRef:
    from lm_core.registry.register import registry_client
    from lm_core.registry.resolve import ModelNotFound, registered_version, store_uri

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
