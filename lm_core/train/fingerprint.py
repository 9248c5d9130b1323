"""What decides a pretraining's output, hashed: light to import, so that a cached run need not
load torch to find that there is nothing to do."""

from __future__ import annotations

from typing import Any

from lm_core.config import Config
from lm_core.workspace import ArtifactRef, fingerprint

CODE_VERSION = 1  # bump when the same config and data would train different weights


def decisive(cfg: Config) -> dict[str, Any]:
    return {"model": cfg.model.fingerprint_fields(), "pretrain": cfg.pretrain.fingerprint_fields(), "seed": cfg.seed}


def pretrain_fingerprint(cfg: Config, chunk: ArtifactRef) -> str:
    return fingerprint("pretrain", decisive(cfg), {"chunk": chunk.fingerprint}, CODE_VERSION)
