"""BLEU and chrF of a model's continuations of prompts, against reference continuations.

The model continues every prompt (greedy by default, in batches); sacrebleu scores the corpus of
continuations against the references with its standard settings, and its metric signatures are
kept with the scores, so a figure can be reproduced with sacrebleu's own command line:

    sacrebleu references.txt -i generations.txt -m bleu chrf

sacrebleu reads segments one per line; a continuation may span lines, so each segment is made one
line (every run of whitespace becomes one space) before scoring, here as in any file written for
the command line. Neither score depends on the kind or amount of whitespace otherwise: BLEU's 13a
tokenizer splits on it and chrF leaves it out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lm_core.config import GenerationConfig
from lm_core.evaluate.errors import EvalSetError
from lm_core.evaluate.pairs import Pair
from lm_core.progress import NullProgress, Progress
from lm_core.textgen import GenerationSettings, TextModel


@dataclass
class PairScores:
    """A pair set's corpus-level scores and what they were computed from."""

    bleu: float
    chrf: float
    signatures: dict[str, str]  # metric -> sacrebleu signature
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt, generation, reference
    generated_tokens: int = 0  # the continuations re-encoded: about the tokens generated
    seconds: float = 0.0  # spent generating


def settings(cfg: GenerationConfig) -> GenerationSettings:
    return GenerationSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed)


def generate(
    model: TextModel,
    prompts: list[str],
    cfg: GenerationConfig,
    batch_size: int,
    progress: Progress = NullProgress(),
    as_chat: bool = False,
) -> list[str]:
    """The model's continuation of each prompt (with `as_chat`, a chat model's reply to it as a
    user message), in the prompts' order. Prompts of similar token length are batched together,
    so little of a batch is padding."""
    lengths = [len(model.encode(p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    out: list[str] = [""] * len(prompts)
    s = settings(cfg)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        run = model.generate if as_chat else model.complete
        for i, text in zip(batch, run([prompts[i] for i in batch], s), strict=True):
            out[i] = text
        progress.advance(len(batch))
    return out


def segment(text: str) -> str:
    """One sacrebleu segment: a single line."""
    return " ".join(text.split())


def corpus_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Corpus BLEU and chrF (sacrebleu's defaults, one reference each) and their signatures."""
    from sacrebleu.metrics import BLEU, CHRF  # imported here: training imports this package too

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    hyps = [segment(h) for h in hypotheses]
    refs = [[segment(r) for r in references]]
    scores, signatures = {}, {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        scores[name] = float(metric.corpus_score(hyps, refs).score)
        signatures[name] = str(metric.get_signature())
    return scores, signatures


def score_pairs(
    model: TextModel,
    pairs: list[Pair],
    cfg: GenerationConfig,
    batch_size: int,
    progress: Progress = NullProgress(),
    name: str = "pairs",
    as_chat: bool = False,
) -> PairScores:
    """Generate a continuation of every prompt (`as_chat`: a chat model's reply) and score them
    against the references."""
    if not pairs:
        raise EvalSetError(f"the pair set {name!r} is empty")
    progress.start(len(pairs), f"{name} prompts")
    t0 = time.perf_counter()
    generations = generate(model, [p.prompt for p in pairs], cfg, batch_size, progress, as_chat)
    seconds = time.perf_counter() - t0
    scores, signatures = corpus_scores(generations, [p.reference for p in pairs])
    samples = [
        {"prompt": p.prompt, "generation": g, "reference": p.reference} for p, g in zip(pairs, generations, strict=True)
    ]
    generated = sum(len(model.encode(g)) for g in generations)
    return PairScores(scores["bleu"], scores["chrf"], signatures, samples, generated, seconds)
