"""What decides a pretraining's output, hashed: light to import, so that a cached run need not
load torch to find that there is nothing to do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_core.config import Config
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint

if TYPE_CHECKING:
    from lm_core.stages import Inputs

CODE_VERSION = 3  # bump when the same config and data would train different weights (2: Muon by default;
# 3: precision auto autocasts to bf16 on CPUs with native bf16; the head and loss fused)


def decisive(cfg: Config) -> dict[str, Any]:
    return {"model": cfg.model.fingerprint_fields(), "pretrain": cfg.pretrain.fingerprint_fields(), "seed": cfg.seed}


def pretrain_fingerprint(cfg: Config, chunk: ArtifactRef) -> str:
    return fingerprint("pretrain", decisive(cfg), {"chunk": chunk.fingerprint}, CODE_VERSION)


def pretrain_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    return _key(cfg, inputs["chunk"])


def _key(cfg: Config, chunk: ArtifactRef) -> StageKey:
    """The manifest names the tokenizer's artifact too: the lineage that MLflow's tags follow."""
    tokenize = {k: v for k, v in chunk.manifest()["inputs"].items() if k == "tokenize"}
    return StageKey(
        stage="pretrain",
        fingerprint=pretrain_fingerprint(cfg, chunk),
        config=decisive(cfg),
        inputs={"chunk": chunk.fingerprint, **tokenize},
    )
