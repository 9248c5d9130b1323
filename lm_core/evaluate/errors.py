"""What stops an evaluation before anything is published; each message names the problem."""

from __future__ import annotations


class EvalSetError(ValueError):
    """An evaluation set that cannot be scored (missing, empty, unreadable, or unfit for the
    model); the message says which and why."""


class PairFileError(EvalSetError):
    """A pair file that cannot be used; the message names the file, the line and the problem."""
