"""One document's way through the clean stage: decode, extract and repair, language, quality,
PII, and the fingerprints that deduplication compares later.

`clean_document` is a pure function of the raw document and the config: the same input gives
the same output in any process, which is what makes the stage's output independent of how its
shards are scheduled.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lm_core.clean.decode import decode_body, garbage_fraction
from lm_core.clean.dedup import exact_digest, minhash_signature, normalized_words
from lm_core.clean.extract import UnsupportedContent, extract_text
from lm_core.clean.language import check_language
from lm_core.clean.pii import scrub_pii
from lm_core.clean.quality import QUALITY_REASONS, check_quality
from lm_core.config import CleanConfig

# Why a document was dropped: the `reason` column of rejected/ (quality rules add their names).
EMPTY = "empty"  # no bytes, or only whitespace
NOT_TEXT = "not_text"  # binary data, or bytes that decode to mostly garbage
UNSUPPORTED = "unsupported_content_type"  # a PDF, an image, ...
EXTRACT_ERROR = "extract_error"  # the page could not be parsed at all
NO_TEXT = "no_text"  # parsed, but no main text in it
LANGUAGE = "language"  # not a kept language, or identified with too little confidence
DUPLICATE = "duplicate"  # same normalised text as a kept document (detail: its id)
NEAR_DUPLICATE = "near_duplicate"  # MinHash-similar to a kept document (detail: its id)
REASONS = (EMPTY, NOT_TEXT, UNSUPPORTED, EXTRACT_ERROR, NO_TEXT, LANGUAGE, *QUALITY_REASONS, DUPLICATE, NEAR_DUPLICATE)

# Above this share of U+FFFD and control characters, decoded bytes are not text.
MAX_GARBAGE_FRACTION = 0.02


@dataclass
class Kept:
    id: str
    text: str
    language: str | None
    n_words: int
    n_bytes: int
    digest: bytes  # exact-duplicate fingerprint
    signature: np.ndarray | None  # MinHash, when near-dedup is on
    pii: Counter = field(default_factory=Counter)


@dataclass
class Dropped:
    reason: str
    detail: str | None
    text: str | None  # what the rule saw (PII scrubbed), None if there was no text


def document_id(text: str) -> str:
    """Hex hash of the final text: the same text has the same id in every run."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _decode_and_extract(
    body: bytes, content_type: str | None, declared: str | None, detected: str | None, cfg: CleanConfig
) -> str | Dropped:
    if not body.strip():
        return Dropped(EMPTY, f"{len(body)} bytes", None)
    decoded = decode_body(body, declared, detected)
    garbage = garbage_fraction(decoded.text)
    if garbage > MAX_GARBAGE_FRACTION:
        detail = f"{garbage:.3f} of characters undecodable or control > {MAX_GARBAGE_FRACTION} ({decoded.encoding})"
        return Dropped(NOT_TEXT, detail, None)
    try:
        text = extract_text(decoded.text, content_type, tables=cfg.extract_tables, favor=cfg.favor)
    except UnsupportedContent as e:
        return Dropped(UNSUPPORTED, str(e), None)
    except Exception as e:  # a page so malformed that the parser gives up: recorded, not fatal
        return Dropped(EXTRACT_ERROR, f"{type(e).__name__}: {e}"[:500], None)
    if not text:
        return Dropped(NO_TEXT, f"no main text in {len(body)} bytes of {content_type or 'unknown type'}", None)
    return text


def clean_document(
    body: bytes, content_type: str | None, declared: str | None, detected: str | None, cfg: CleanConfig
) -> Kept | Dropped:
    """Everything the clean stage does to one document before deduplication."""
    text = _decode_and_extract(body, content_type, declared, detected, cfg)
    if isinstance(text, Dropped):
        return text

    guess, refusal = check_language(text, cfg.language)
    if refusal is not None:
        return Dropped(LANGUAGE, refusal, scrub_pii(text, cfg.pii).text)
    rejection = check_quality(text, cfg.quality)
    if rejection is not None:
        return Dropped(rejection.reason, rejection.detail, scrub_pii(text, cfg.pii).text)

    scrubbed = scrub_pii(text, cfg.pii)
    text = scrubbed.text
    words = normalized_words(text)
    signature = minhash_signature(words, cfg.dedup.num_perm, cfg.dedup.shingle_words) if cfg.dedup.near else None
    return Kept(
        id=document_id(text),
        text=text,
        language=guess.code if guess is not None else None,
        n_words=len(text.split()),
        n_bytes=len(text.encode("utf-8")),
        digest=exact_digest(words),
        signature=signature,
        pii=scrubbed.counts,
    )
