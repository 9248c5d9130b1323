"""The clean stage: raw crawled documents -> main text, repaired, filtered, scrubbed of personal
data and deduplicated; every dropped document is kept in `rejected/` with its reason.

    decode.py    bytes -> str, never raising
    extract.py   main text of HTML (trafilatura), repair (ftfy, NFC), whitespace
    language.py  language identification (py3langid)
    quality.py   Gopher/C4-style quality rules
    pii.py       e-mail, IP address and phone number scrubbing
    dedup.py     exact and MinHash near-duplicate detection
    pipeline.py  one document through all of the above
    stage.py     the stage over shards: filter (map), dedup (reduce), write (map)
"""

from lm_core.clean.pipeline import (
    DUPLICATE,
    EMPTY,
    EXTRACT_ERROR,
    LANGUAGE,
    NEAR_DUPLICATE,
    NO_TEXT,
    NOT_TEXT,
    REASONS,
    UNSUPPORTED,
)
from lm_core.clean.quality import QUALITY_REASONS
from lm_core.clean.stage import CODE_VERSION, CleanError, clean_fingerprint, run_clean

__all__ = [
    "run_clean",
    "clean_fingerprint",
    "CODE_VERSION",
    "CleanError",
    "REASONS",
    "QUALITY_REASONS",
    "EMPTY",
    "NOT_TEXT",
    "UNSUPPORTED",
    "EXTRACT_ERROR",
    "NO_TEXT",
    "LANGUAGE",
    "DUPLICATE",
    "NEAR_DUPLICATE",
]
