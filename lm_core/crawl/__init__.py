"""The crawl stage: URLs, the pydoc demo site, WARC files, local files and Hugging Face
datasets into one `crawl` artifact of raw documents (RAW_DOC) and failures (FAILURE).

    from lm_core.crawl import run_crawl
    ref = run_crawl(config.crawl, Workspace("workspace"))

Modules: `urls` (normalisation, scope, address safety), `robots`, `links`, `encoding`,
`web` (the crawler), `sources` (warc, files, hf_dataset), `pydoc_site` (the demo server),
`stage` (fingerprint, shards, checkpoints, resume), `reasons` (why a row is a failure).
"""

from lm_core.crawl import reasons
from lm_core.crawl.reasons import (
    BAD_URL,
    CONNECTION_ERROR,
    CONTENT_TYPE,
    EXCLUDED,
    HTTP_ERROR,
    MALFORMED,
    OFF_SITE,
    PRIVATE_ADDRESS,
    REDIRECT_LOOP,
    ROBOTS,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    UNREADABLE,
)
from lm_core.crawl.sources import CrawlInputError
from lm_core.crawl.stage import (
    CODE_VERSION,
    NoDocuments,
    crawl_fingerprint,
    crawl_inputs,
    current_snapshot,
    redundant_snapshots,
    run_crawl,
)

__all__ = [
    "run_crawl", "crawl_fingerprint", "crawl_inputs", "current_snapshot", "redundant_snapshots", "CODE_VERSION",
    "CrawlInputError", "NoDocuments", "reasons",
    "ROBOTS", "EXCLUDED", "OFF_SITE", "PRIVATE_ADDRESS", "BAD_URL", "HTTP_ERROR", "TIMEOUT", "CONNECTION_ERROR",
    "TOO_LARGE", "CONTENT_TYPE", "TOO_MANY_REDIRECTS", "REDIRECT_LOOP", "UNREADABLE", "MALFORMED",
]  # fmt: skip
