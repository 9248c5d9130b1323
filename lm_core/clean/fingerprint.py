"""What decides a clean artifact, hashed: light to import (no trafilatura, datasketch or
numpy), so that a cached run finds its artifact without loading the cleaning pipeline."""

from __future__ import annotations

from lm_core.config import CleanConfig
from lm_core.workspace import ArtifactRef, fingerprint

STAGE = "clean"
CODE_VERSION = 1  # bump when the same config and crawl would clean differently


def clean_inputs(crawl: ArtifactRef) -> dict[str, str]:
    """The crawl artifact, and what it holds: a crawl's fingerprint covers its config, not the
    pages it found (the web changes; concurrent fetching under `max_pages` keeps a different set),
    so its content digest stands beside it. A crawl published before crawls had one has none."""
    inputs = {"crawl": crawl.fingerprint}
    if crawl.stats.get("content_digest"):
        inputs["crawl_content"] = crawl.stats["content_digest"]
    return inputs


def clean_fingerprint(cfg: CleanConfig, crawl: ArtifactRef) -> str:
    return fingerprint(STAGE, cfg.fingerprint_fields(), clean_inputs(crawl), CODE_VERSION)
