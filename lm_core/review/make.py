"""Making a review round: prompts, both models' answers (generated once), a blind order per item.

A round is made whole or not at all: in a hidden sibling folder, renamed into place once its
answers are generated and its vote store exists. Everything random in it (which prompts, the
answers' sampling, which answer is A) follows from `review.seed`.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lm_core.config import ReviewConfig
from lm_core.model_spec import find_model_artifact
from lm_core.review.prompts import Prompt, find_prompts
from lm_core.review.round import ROUND_FILE, ROUNDS_DIR, VOTES_FILE, ReviewError, Round
from lm_core.review.votes import MODELS, VoteStore
from lm_core.textgen import GenerationSettings, TextModel
from lm_core.workspace import Workspace, write_json_atomic

BATCH = 16  # prompts generated at once


def new_round(
    ws: Workspace,
    challenger: str,
    champion: str,
    cfg: ReviewConfig,
    prompts: str | None = None,
    tracking_uri: str | None = None,
    device: str = "cpu",
) -> Round:
    """Make a round between the models two specs name (as `lmforge generate --model` takes them,
    resolved to the workspace artifacts they are): `cfg.prompts` prompts from `prompts` (see
    `lm_core.review.prompts`), both models' answers, a blind order per item."""
    models = {
        "challenger": find_model_artifact(challenger, ws, tracking_uri),
        "champion": find_model_artifact(champion, ws, tracking_uri),
    }
    if models["challenger"].fingerprint == models["champion"].fingerprint:
        raise ReviewError(f"{challenger!r} and {champion!r} are the same model: a round compares two")
    source, found = find_prompts(ws, prompts, models["challenger"], models["champion"])
    rng = random.Random(cfg.seed)
    chosen = rng.sample(found, min(cfg.prompts, len(found)))
    orders = [tuple(MODELS) if rng.random() < 0.5 else tuple(reversed(MODELS)) for _ in chosen]
    settings = GenerationSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_k, None, cfg.seed)
    answers, about = {}, {}
    for role, ref in models.items():
        model = TextModel.load(ref.dir, device)
        answers[role] = generate_answers(model, chosen, settings)
        about[role] = {
            "spec": challenger if role == "challenger" else champion,
            "stage": ref.stage,
            "fingerprint": ref.fingerprint,
            "chat": model.is_chat,
        }
        del model
    created = datetime.now(UTC)
    round_id = f"{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    meta = {
        "id": round_id,
        "created": created.isoformat(timespec="microseconds"),
        **about,
        "prompts": {"source": source, "available": len(found)},
        "generation": {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_k": cfg.top_k},
        "seed": cfg.seed,
        "items": [
            {
                "id": i,
                "prompt": [m.to_dict() for m in prompt],
                "answers": {role: answers[role][i] for role in MODELS},
                "order": list(order),
            }
            for i, (prompt, order) in enumerate(zip(chosen, orders, strict=True))
        ],
    }
    return _publish(ws.root / ROUNDS_DIR, round_id, meta)


def generate_answers(model: TextModel, prompts: list[Prompt], settings: GenerationSettings) -> list[str]:
    """A chat model's reply to each prompt; a base model's continuation of its text."""
    out: list[str] = []
    for start in range(0, len(prompts), BATCH):
        batch = prompts[start : start + BATCH]
        if model.is_chat:
            replies = model.reply([list(p) for p in batch], settings)
        else:
            replies = model.complete(["\n".join(m.content for m in p) for p in batch], settings)
        out += [r.strip() for r in replies]
    return out


def _publish(folder: Path, round_id: str, meta: dict[str, Any]) -> Round:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".partial-{round_id}"
    try:
        partial.mkdir()
        write_json_atomic(partial / ROUND_FILE, meta)
        VoteStore.create(partial / VOTES_FILE)
        os.rename(partial, folder / round_id)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Round(folder / round_id)
