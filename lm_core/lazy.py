"""The one way lmforge defers an import: a "module:name" string, imported when first called.

A command imports only what it runs. The stages' functions (lm_core/stages.py) and the flows a
command orchestrates (lmforge/cli.py) are named by such strings, so that reading the stage table
(`lmforge --help`, `ls`, a cached run's keys) imports no stage's code. Measured on 2 CPU cores,
median of 5: importing every stage's run module (torch, MLflow, trafilatura, datasketch, ...)
takes 4.5 s against 0.15 s for the table alone, and the flows (Prefect) 1.0 s more than the CLI.
Everything else imports what it needs at the top of the module that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any


def load(ref: str) -> Any:
    """The object `ref` names, "package.module:name", its module imported now if it was not."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
