"""Preference accuracy: how often a model finds the chosen reply more likely than the rejected
one, on held-out `{prompt, chosen, rejected}` pairs (a DPO model's, or any pair file).

The replies are rendered with the chat template after their prompt and scored by the summed
log-probability of the reply tokens (and the closing `<|end|>`). Two figures:

    accuracy         the model alone finds the chosen reply more likely (any two models compare)
    reward_accuracy  DPO's implicit reward, log p - log p_reference, is higher for the chosen
                     reply: what preference tuning optimises, given the model it started from
"""

from __future__ import annotations

from pathlib import Path

import torch

from lm_core.finetune.artifact import heldout_preferences_file
from lm_core.finetune.batches import preference_batch
from lm_core.finetune.data import PreferenceExample, read_preferences_jsonl, write_preferences_jsonl
from lm_core.finetune.losses import sequence_logprobs
from lm_core.progress import NullProgress, Progress
from lm_core.textgen import TextModel
from lm_core.tokenize.chat_template import ChatTemplate

PREFERENCES_DIR = "preferences"


def model_preference_sets(model_dir: str | Path) -> dict[str, list[PreferenceExample]]:
    path = heldout_preferences_file(model_dir)  # a dpo finetune artifact's held-out pairs
    return {"heldout": read_preferences_jsonl(path)} if path is not None else {}


def published_preference_sets(evaluate_dir: str | Path) -> dict[str, list[PreferenceExample]]:
    folder = Path(evaluate_dir) / PREFERENCES_DIR
    return {p.stem: read_preferences_jsonl(p) for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def write_preference_sets(out: Path, sets: dict[str, list[PreferenceExample]]) -> None:
    for name, prefs in sets.items():
        (out / PREFERENCES_DIR).mkdir(exist_ok=True)
        write_preferences_jsonl(out / PREFERENCES_DIR / f"{name}.jsonl", prefs)


@torch.inference_mode()
def preference_accuracy(
    model: TextModel,
    prefs: list[PreferenceExample],
    batch_size: int,
    progress: Progress = NullProgress(),
    name: str = "",
    reference: TextModel | None = None,
) -> dict[str, float]:
    """accuracy and mean log-probability margin; with a `reference`, reward accuracy and margin."""
    template = model.template or ChatTemplate(model.tokenizer)
    max_len = model.context + 1
    pairs = []
    for p in prefs:
        c, r = (
            template.render_reply(list(p.prompt), p.chosen, max_len),
            template.render_reply(list(p.prompt), p.rejected, max_len),
        )
        if c.n_targets and r.n_targets:
            pairs.append((c, r))
    if not pairs:
        return {}
    progress.start(len(pairs), f"{name} preference pairs")
    device = model.model.embed.weight.device
    totals = {"accuracy": 0.0, "margin": 0.0, "reward_accuracy": 0.0, "reward_margin": 0.0}
    for i in range(0, len(pairs), batch_size):
        group = pairs[i : i + batch_size]
        idx, targets, mask = (t.to(device) for t in preference_batch(group, model.context, template.pad_id).stacked())
        logp = sequence_logprobs(model.model, idx, targets, mask)
        diff = logp[: len(group)] - logp[len(group) :]  # chosen - rejected
        totals["accuracy"] += float((diff > 0).sum())
        totals["margin"] += float(diff.sum())
        if reference is not None:
            ref = sequence_logprobs(reference.model, idx, targets, mask)
            reward = diff - (ref[: len(group)] - ref[len(group) :])
            totals["reward_accuracy"] += float((reward > 0).sum())
            totals["reward_margin"] += float(reward.sum())
        progress.advance(len(group))
    out = {k: v / len(pairs) for k, v in totals.items() if reference is not None or not k.startswith("reward")}
    return out | {"pairs": float(len(pairs))}
