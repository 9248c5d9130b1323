"""Language identification with py3langid (its model ships inside the package: no download)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lm_core.config import LanguageConfig

# The model looks at character n-grams; a long sample says as much as a whole book and costs far
# less. Documents are identified from their first characters only.
_SAMPLE_CHARS = 20_000

_identifier = None
_identifier_lock = threading.Lock()


def _get_identifier():
    """One identifier per process, loaded on first use (threads share it: classify only reads)."""
    global _identifier
    if _identifier is None:
        with _identifier_lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier  # with its model, on first use

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


@dataclass(frozen=True)
class LanguageGuess:
    code: str  # ISO 639-1, e.g. "en"
    score: float  # probability in [0, 1]


def identify(text: str) -> LanguageGuess:
    code, score = _get_identifier().classify(text[:_SAMPLE_CHARS])
    return LanguageGuess(str(code), float(score))


def check_language(text: str, cfg: LanguageConfig) -> tuple[LanguageGuess | None, str | None]:
    """(the guess, or None when the filter is off; a rejection detail, or None if kept)."""
    if cfg.keep is None:
        return None, None
    guess = identify(text)
    if guess.code not in cfg.keep:
        return guess, f"{guess.code} ({guess.score:.2f}) not in {sorted(cfg.keep)}"
    if guess.score < cfg.min_score:
        return guess, f"{guess.code} score {guess.score:.2f} < {cfg.min_score}"
    return guess, None
