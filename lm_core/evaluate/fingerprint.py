"""What decides an evaluation's output, hashed: light to import (no torch), so that a cached
run finds its published artifact without loading a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm_core.config import EvaluateConfig
from lm_core.evaluate.sets import source_digests
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint

if TYPE_CHECKING:
    from lm_core.config import Config
    from lm_core.stages import Inputs

STAGE = "evaluate"
CODE_VERSION = 2  # bump when the same config, model and data would score differently (2: preferences)


def evaluate_inputs(cfg: EvaluateConfig, model: ArtifactRef, chunk: ArtifactRef) -> dict[str, str]:
    """The model and chunk artifacts, and a digest of the content of every local pair and text file."""
    return {model.stage: model.fingerprint, "chunk": chunk.fingerprint, **source_digests(cfg)}


def evaluate_fingerprint(cfg: EvaluateConfig, model: ArtifactRef, chunk: ArtifactRef) -> str:
    return fingerprint_of(cfg, evaluate_inputs(cfg, model, chunk))


def fingerprint_of(cfg: EvaluateConfig, inputs: dict[str, str]) -> str:
    """The fingerprint, given the inputs already hashed (the stage hashes the files only once)."""
    return fingerprint(STAGE, cfg.fingerprint_fields(), inputs, CODE_VERSION)


def evaluate_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    return evaluation_key(cfg.evaluate, inputs["model"], inputs["chunk"])


def evaluation_key(cfg: EvaluateConfig, model: ArtifactRef, chunk: ArtifactRef) -> StageKey:
    inputs = evaluate_inputs(cfg, model, chunk)
    return StageKey(
        stage=STAGE, fingerprint=fingerprint_of(cfg, inputs), config=cfg.model_dump(mode="json"), inputs=inputs
    )
