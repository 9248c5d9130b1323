"""What decides a clean artifact, hashed: light to import (no trafilatura, datasketch or
numpy), so that a cached run finds its artifact without loading the cleaning pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm_core.config import CleanConfig
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint

if TYPE_CHECKING:
    from lm_core.config import Config
    from lm_core.stages import Inputs

STAGE = "clean"
# bump when the same config and documents would clean differently
# 2: documents are read in URL order, so the output follows from the crawl's content alone
# 3: credentials are scrubbed (pii.secrets)
# 4: HTML becomes Markdown-like text by its structure: code verbatim between fences, headings,
#    lists and tables marked, chrome and permalinks dropped; quality rules measure prose only
# 5: PII candidates are validated (phone numbers by phonenumbers, IPv4 addresses by context)
# 6: a list item's divs of text are paragraphs (Javadoc's member summaries no longer run together)
# 7: <br> and no-break spaces are read as marks in the text (the same text, faster); a list's loose
#    text keeps its line breaks
CODE_VERSION = 7


def clean_inputs(crawl: ArtifactRef) -> dict[str, str]:
    """The crawl artifact cleaned (the lineage, in the manifest) and its content digest."""
    inputs = {"crawl": crawl.fingerprint}
    if crawl.stats.get("content_digest"):
        inputs["crawl_content"] = crawl.stats["content_digest"]
    return inputs


def clean_fingerprint(cfg: CleanConfig, crawl: ArtifactRef) -> str:
    """The config and what the crawl holds: its content digest, not its fingerprint, which
    covers the crawl's config and snapshot rather than the pages found. A refresh that found the
    same pages thus shares the clean artifact (and every one after it) of the crawl before it;
    one that found other pages (the web changed; a capped concurrent crawl kept another set)
    does not. A crawl published before crawls had a digest is identified by its fingerprint."""
    return _fingerprint(cfg, clean_inputs(crawl))


def made_with(cfg: CleanConfig, manifest: dict, fp: str) -> bool:
    """Whether the published clean artifact `fp` was made with `cfg`'s decisive settings and this
    CODE_VERSION: its fingerprint, recomputed from them and its manifest's inputs, is its name.
    (What lets a build reuse its per-document outcomes.)"""
    return _fingerprint(cfg, manifest.get("inputs", {})) == fp


def _fingerprint(cfg: CleanConfig, inputs: dict[str, str]) -> str:
    digest = inputs.get("crawl_content")
    decisive = {"crawl_content": digest} if digest else {"crawl": inputs.get("crawl")}
    return fingerprint(STAGE, cfg.fingerprint_fields(), decisive, CODE_VERSION)


def clean_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    """The declared key of the stage (lm_core/stages.py)."""
    return key_of(cfg.clean, inputs["crawl"])


def key_of(cfg: CleanConfig, crawl: ArtifactRef) -> StageKey:
    """What cleaning `crawl` with the clean section `cfg` builds (run_clean's own key)."""
    return StageKey(
        stage=STAGE,
        fingerprint=clean_fingerprint(cfg, crawl),
        config=cfg.fingerprint_fields(),
        inputs=clean_inputs(crawl),
    )
