"""Small things several test modules build the same way."""

from __future__ import annotations

import hashlib


class Interrupted(Exception):
    """Stands for whatever stops a stage part-way: a crash, a kill, a full disk."""


class FailAfter:
    """A progress listener that crashes the stage after `n` units of work: an interruption."""

    def __init__(self, n: int):
        self.n = n

    def start(self, total, unit):
        pass

    def advance(self, k=1):
        self.n -= k
        if self.n < 0:
            raise Interrupted("the stage was interrupted")

    def describe(self, text):
        pass


def clean_doc(i: int, text: str, host: str = "example.org") -> dict:
    """A CLEAN_DOC row, as the clean stage writes it."""
    return {
        "id": hashlib.sha256(f"{i}:{text}".encode()).hexdigest()[:16],
        "url": f"https://{host}/{i}",
        "source": "urls",
        "text": text,
        "language": "en",
        "n_words": len(text.split()),
        "n_bytes": len(text.encode()),
    }
