"""The clean stage: raw crawled documents -> main text, repaired, filtered, scrubbed of personal
data and deduplicated; every dropped document is kept in `rejected/` with its reason.

    decode.py    bytes -> str, never raising
    extract.py   main text of a document: HTML through the two below and trafilatura; repair (ftfy, NFC)
    html_prep.py an HTML page made ready by its structure: chrome out, main content in, code set aside
    render.py    trafilatura's tree as Markdown-like text, code blocks fenced and verbatim
    language.py  language identification (py3langid)
    quality.py   Gopher/C4-style quality rules, on prose; docs and web profiles
    pii.py       e-mail, IP address and phone number scrubbing
    dedup.py     exact and MinHash near-duplicate detection
    pipeline.py  one document through all of the above
    stage.py     the stage over shards: filter (map), dedup (reduce), write (map)
    fingerprint.py  what decides the artifact (light: for cached runs)
"""
