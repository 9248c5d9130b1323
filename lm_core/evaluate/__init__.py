"""Evaluate: how well a trained model predicts and continues text.

The modules, each with one job:

    perplexity.py   loss, perplexity, bits-per-byte on validation blocks and on any texts
                    (sliding window), summed by `lm_core.token_loss` as training's validation is
    pairs.py        prompt/reference pairs: JSONL files, and pairs cut from held-out documents
    bleu.py         generations for the prompts, scored with sacrebleu (BLEU, chrF)
    sets.py         the named pair and text sets of an `EvaluateConfig`
    preferences.py  preference accuracy: how often the chosen reply is the likelier one
    fingerprint.py  what decides an evaluation (no torch: a cached run loads no model)
    stage.py        the `evaluate` artifact; `evaluate_model` for an already loaded model
    errors.py       what stops an evaluation

Usage:

    from lm_core.evaluate.stage import run_evaluate
    ref = run_evaluate(config.evaluate, pretrain_ref, chunk_ref, Workspace("workspace"))
"""
