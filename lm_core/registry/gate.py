"""The champion/challenger gate: does a newly registered model replace the champion?

Both models must have been scored on the same sets (the caller scores the champion again with
the challenger's evaluation data). The challenger becomes champion when there is no champion,
or when its validation bits-per-byte is lower by more than `min_bpb_gain` and its BLEU on the
held-out pairs is not worse by more than `bleu_tolerance`. BLEU is compared only when both
models have it (an evaluation with `heldout_pairs: 0` measures none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lm_core.config import RegistryConfig

BPB = "val_bpb"  # bits per byte on the validation blocks: lower is better
BLEU = "bleu.heldout"  # BLEU of generations on held-out prompt/reference pairs: higher is better
CHAT_BLEU = "bleu.chat"  # a chat model's BLEU on its held-out chats: compared in BLEU's place


@dataclass(frozen=True)
class GateDecision:
    champion: bool
    reason: str  # the numbers compared, for people reading the registry


def decide(cfg: RegistryConfig, metrics: dict[str, float], champion_metrics: dict[str, float] | None) -> GateDecision:
    """Whether the challenger (`metrics`) should replace the champion (`champion_metrics`,
    None when there is no champion)."""
    if champion_metrics is None:
        return GateDecision(True, "no champion yet: the first model becomes champion")
    new_bpb, old_bpb = _get(metrics, BPB), _get(champion_metrics, BPB)
    if new_bpb is None or old_bpb is None:
        missing = " and ".join(who for who, v in (("challenger", new_bpb), ("champion", old_bpb)) if v is None)
        return GateDecision(False, f"{BPB} is missing for the {missing}: the models cannot be compared")

    gain = old_bpb - new_bpb
    failed = [] if gain > cfg.min_bpb_gain else [f"{BPB} not lower by enough"]
    checks = [f"{BPB} {_versus(new_bpb, old_bpb, 4)} (must be lower by more than {cfg.min_bpb_gain:.4f})"]
    bleu = CHAT_BLEU if CHAT_BLEU in metrics and CHAT_BLEU in champion_metrics else BLEU
    new_bleu, old_bleu = _get(metrics, bleu), _get(champion_metrics, bleu)
    if new_bleu is None or old_bleu is None:
        checks.append(f"{bleu} not compared (not measured for both)")
    else:
        if old_bleu - new_bleu > cfg.bleu_tolerance:
            failed.append(f"{bleu} lower by too much")
        checks.append(f"{bleu} {_versus(new_bleu, old_bleu, 2)} (may be lower by at most {cfg.bleu_tolerance:.2f})")
    verdict = f"stays challenger, {' and '.join(failed)}" if failed else "becomes champion"
    return GateDecision(not failed, f"{verdict}: " + "; ".join(checks))


def _versus(new: float, old: float, digits: int) -> str:
    diff = new - old
    change = "equal" if diff == 0 else f"{'higher' if diff > 0 else 'lower'} by {abs(diff):.{digits}f}"
    return f"{new:.{digits}f} vs champion {old:.{digits}f}, {change}"


def _get(metrics: dict[str, float], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
