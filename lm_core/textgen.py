"""A trained model with its tokenizer, ready to generate text: what evaluation, the registered
MLflow model, `lmforge generate` and `lmforge chat` all load.

A model folder (a pretrain or fine-tune artifact, or the files of a registered model) holds
`model.safetensors`, `model_config.json` and `tokenizer.json`; nothing in it is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from lm_core.model import GPT, GPTConfig
from lm_core.tokenize import END_OF_TEXT, TokenizerError, load_tokenizer
from lm_core.train.checkpoint import CheckpointError, load_weights

MODEL_FILES = ("model.safetensors", "model_config.json", "tokenizer.json")


class ModelLoadError(RuntimeError):
    """A model folder that is incomplete, or whose tokenizer does not fit its weights."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


class TextModel:
    """A GPT and its tokenizer: strings in, strings out."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, source: str = ""):
        if tokenizer.get_vocab_size() > model.cfg.vocab_size:
            raise ModelLoadError(
                f"{source}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
                f"{model.cfg.vocab_size} embeddings: they do not belong together"
            )
        self.model, self.tokenizer, self.source = model.eval(), tokenizer, source
        self.eos_id = tokenizer.token_to_id(END_OF_TEXT)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> TextModel:
        folder = Path(folder)
        missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelLoadError(f"{folder} is not a model folder: {', '.join(missing)} missing")
        try:
            cfg = GPTConfig(**json.loads((folder / "model_config.json").read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{folder / 'model_config.json'} is not a valid model config: {e}") from None
        try:
            tokenizer = load_tokenizer(folder / "tokenizer.json")
        except TokenizerError as e:
            raise ModelLoadError(str(e)) from None
        model = GPT(cfg)
        try:
            load_weights(model, folder / "model.safetensors")
        except CheckpointError as e:
            raise ModelLoadError(str(e)) from None
        return cls(model.to(device), tokenizer, str(folder))

    @property
    def context(self) -> int:
        return self.model.cfg.seq_len

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
        """Continue each prompt; stops at end-of-text. Prompts longer than the context keep their
        last tokens (room is left for the new ones)."""
        s = settings or GenerationSettings()
        new = max(1, min(s.max_new_tokens, self.context - 1))
        keep = self.context - new
        ids = [(self.encode(p) or [self.eos_id])[-keep:] for p in prompts]
        device = self.model.embed.weight.device
        gen = torch.Generator(device=device).manual_seed(s.seed)
        outs = self.model.generate(
            ids, new, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, stop_tokens=(self.eos_id,), generator=gen
        )
        return [self.decode(o) for o in outs]
