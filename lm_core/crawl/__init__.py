"""The crawl stage: URLs, the pydoc demo site, WARC files, local files and Hugging Face
datasets into one `crawl` artifact of raw documents (RAW_DOC) and failures (FAILURE).

    from lm_core.crawl.stage import run_crawl
    ref = run_crawl(config.crawl, Workspace("workspace"))

Modules: `urls` (normalisation, scope, address safety), `robots`, `links`, `encoding`,
`web` (the crawler), `sources` (warc, files, hf_dataset), `pydoc_site` (the demo server),
`stage` (fingerprint, shards, checkpoints, resume), `reasons` (why a row is a failure),
`rows` (the rows every source emits).
"""
