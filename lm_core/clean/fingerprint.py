"""What decides a clean artifact, hashed: light to import (no trafilatura, datasketch or
numpy), so that a cached run finds its artifact without loading the cleaning pipeline."""

from __future__ import annotations

from lm_core.config import CleanConfig
from lm_core.workspace import ArtifactRef, fingerprint

STAGE = "clean"
CODE_VERSION = 1  # bump when the same config and crawl would clean differently


def clean_fingerprint(cfg: CleanConfig, crawl: ArtifactRef) -> str:
    return fingerprint(STAGE, cfg.fingerprint_fields(), {"crawl": crawl.fingerprint}, CODE_VERSION)
