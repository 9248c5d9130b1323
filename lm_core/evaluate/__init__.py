"""Evaluate: how well a trained model predicts and continues text.

The modules, each with one job:

    perplexity.py   loss, perplexity, bits-per-byte on validation blocks and on any texts
                    (sliding window), summed by `lm_core.token_loss` as training's validation is
    pairs.py        prompt/reference pairs: JSONL files, and pairs cut from held-out documents
    bleu.py         generations for the prompts, scored with sacrebleu (BLEU, chrF)
    sets.py         the named pair and text sets of an `EvaluateConfig`
    fingerprint.py  what decides an evaluation (no torch: a cached run loads no model)
    stage.py        the `evaluate` artifact; `evaluate_model` for an already loaded model
    errors.py       what stops an evaluation

Usage:

    from lm_core.evaluate import run_evaluate
    ref = run_evaluate(config.evaluate, pretrain_ref, chunk_ref, Workspace("workspace"))

The names below are imported on first use, so that `lm_core.evaluate.fingerprint` loads only
what it needs.
"""

from __future__ import annotations

from lm_core.lazy import lazy_attributes

_HOME = {
    "EvalSetError": "errors",
    "PairFileError": "errors",
    "CODE_VERSION": "fingerprint",
    "STAGE": "fingerprint",
    "evaluate_fingerprint": "fingerprint",
    "HELDOUT": "pairs",
    "Pair": "pairs",
    "heldout_pairs": "pairs",
    "read_pairs": "pairs",
    "write_pairs": "pairs",
    "Perplexity": "perplexity",
    "loss_totals": "perplexity",
    "score_blocks": "perplexity",
    "score_texts": "perplexity",
    "score_validation": "perplexity",
    "sliding_windows": "perplexity",
    "build_pair_sets": "sets",
    "published_pair_sets": "sets",
    "read_text_sets": "sets",
    "PairScores": "bleu",
    "corpus_scores": "bleu",
    "score_pairs": "bleu",
    "EvalResult": "stage",
    "check_tokenizer": "stage",
    "evaluate_model": "stage",
    "run_evaluate": "stage",
}
__all__ = sorted(_HOME)

__getattr__ = lazy_attributes(__name__, _HOME)
