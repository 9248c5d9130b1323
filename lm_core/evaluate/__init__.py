"""Evaluate: how well a trained model predicts and continues text.

The modules, each with one job:

    perplexity.py   loss, perplexity, bits-per-byte on validation blocks and on any texts
                    (sliding window); the loss-summing core the training loop shares
    pairs.py        prompt/reference pairs: JSONL files, and pairs cut from held-out documents
    bleu.py         generations for the prompts, scored with sacrebleu (BLEU, chrF)
    sets.py         the named pair and text sets of an `EvaluateConfig`
    fingerprint.py  what decides an evaluation (no torch: a cached run loads no model)
    stage.py        the `evaluate` artifact; `evaluate_model` for an already loaded model
    errors.py       what stops an evaluation

Usage:

    from lm_core.evaluate import run_evaluate
    ref = run_evaluate(config.evaluate, pretrain_ref, chunk_ref, Workspace("workspace"))

The names below are imported on first use, so that `lm_core.evaluate.fingerprint` (and the
training loop's `lm_core.evaluate.perplexity`) load only what they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# the modules that define the names below, lightest first: a name is looked up in this order
_MODULES = ("errors", "fingerprint", "pairs", "sets", "perplexity", "bleu", "stage")

__all__ = [
    "CODE_VERSION",
    "HELDOUT",
    "STAGE",
    "EvalResult",
    "EvalSetError",
    "Pair",
    "PairFileError",
    "PairScores",
    "Perplexity",
    "build_pair_sets",
    "check_tokenizer",
    "corpus_scores",
    "evaluate_fingerprint",
    "evaluate_model",
    "heldout_pairs",
    "loss_totals",
    "published_pair_sets",
    "read_pairs",
    "read_text_sets",
    "run_evaluate",
    "score_blocks",
    "score_pairs",
    "score_texts",
    "score_validation",
    "sliding_windows",
    "write_pairs",
]

if TYPE_CHECKING:
    from lm_core.evaluate.bleu import PairScores, corpus_scores, score_pairs
    from lm_core.evaluate.errors import EvalSetError, PairFileError
    from lm_core.evaluate.fingerprint import CODE_VERSION, STAGE, evaluate_fingerprint
    from lm_core.evaluate.pairs import HELDOUT, Pair, heldout_pairs, read_pairs, write_pairs
    from lm_core.evaluate.perplexity import (
        Perplexity,
        loss_totals,
        score_blocks,
        score_texts,
        score_validation,
        sliding_windows,
    )
    from lm_core.evaluate.sets import build_pair_sets, published_pair_sets, read_text_sets
    from lm_core.evaluate.stage import EvalResult, check_tokenizer, evaluate_model, run_evaluate


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            found = importlib.import_module(f"lm_core.evaluate.{module}")
            if hasattr(found, name):
                globals()[name] = value = getattr(found, name)
                return value
    raise AttributeError(f"module 'lm_core.evaluate' has no attribute {name!r}")
