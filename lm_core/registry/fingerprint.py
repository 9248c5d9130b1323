"""What decides a registration, hashed: light to import (no MLflow, no torch), so that a cached
run finds its published `register` artifact without them. The stage itself is `stage.py`."""

from __future__ import annotations

from lm_core.config import Config
from lm_core.secrets import mask_url
from lm_core.stages import Inputs
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint, read_manifest

STAGE = "register"
CODE_VERSION = 1


def model_name(cfg: Config, model_stage: str = "pretrain") -> str:
    """Base models register under `registry.model_name` (default: the run's name), chat models
    under `finetune.model_name` (default: <name>-chat)."""
    if model_stage == "finetune":
        return cfg.finetune.model_name or f"{cfg.name}-chat"
    return cfg.registry.model_name or cfg.name


def scored_stage(inputs: dict[str, str]) -> str:
    """The stage of the model an evaluation (or registration) scored: a chat model or a base model."""
    return "finetune" if "finetune" in inputs else "pretrain"


def register_inputs(cfg: Config, evaluation: ArtifactRef) -> dict[str, str]:
    inputs = read_manifest(evaluation.dir)["inputs"]
    model_stage = scored_stage(inputs)
    return {
        "evaluate": evaluation.fingerprint,
        model_stage: inputs[model_stage],
        "chunk": inputs["chunk"],
        "name": model_name(cfg, model_stage),
        "tracking_uri": mask_url(cfg.tracking_uri),  # a store's identity; its password stays out of the manifest
    }


def register_fingerprint(cfg: Config, evaluation: ArtifactRef) -> str:
    return fingerprint(STAGE, cfg.registry.fingerprint_fields(), register_inputs(cfg, evaluation), CODE_VERSION)


def register_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    found = register_inputs(cfg, inputs["evaluate"])
    fp = fingerprint(STAGE, cfg.registry.fingerprint_fields(), found, CODE_VERSION)
    return StageKey(stage=STAGE, fingerprint=fp, config=cfg.registry.model_dump(mode="json"), inputs=found)
