"""A trained model with its tokenizer, ready to generate text: what evaluation, the registered
MLflow model, `lmforge generate` and `lmforge chat` all load.

It loads a model folder (`lm_core.model_folder`); nothing in it is unpickled. A chat model
(fine-tuned on conversations) is marked by its `chat.json`: its prompts are then user messages,
rendered with the chat template, and its replies end at `<|end|>`.

The context holds the prompt and the new tokens together. `generate`, `complete` and `reply`
(evaluation, `lmforge chat`) make a prompt fit by keeping its end (a conversation: its latest
turns); `fit` is the strict rule that serving and `lmforge generate` apply instead: a request
the context cannot hold is refused with the figures, never cut in silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from lm_core.model import GPT
from lm_core.model_folder import (
    CHAT,
    INT8_WEIGHTS,
    TOKENIZER,
    WEIGHTS,
    ModelLoadError,
    WeightsError,
    is_chat_model,
    load_weights,
    missing_files,
    read_config,
)
from lm_core.quantize import load_int8
from lm_core.tokenize.bpe import END_OF_TEXT, TokenizerError, load_tokenizer
from lm_core.tokenize.chat_template import ChatDataError, ChatTemplate, Message

DEFAULT_MAX_NEW_TOKENS = 64  # what `fit` allows when no max_new_tokens is asked for (at most)


class ContextOverflow(ValueError):
    """A prompt and max_new_tokens that the model's context cannot hold; the message gives the figures."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


class TextModel:
    """A GPT and its tokenizer: strings in, strings out."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, source: str = "", chat: bool = False):
        if tokenizer.get_vocab_size() > model.cfg.vocab_size:
            raise ModelLoadError(
                f"{source}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
                f"{model.cfg.vocab_size} embeddings: they do not belong together"
            )
        self.model, self.tokenizer, self.source = model.eval(), tokenizer, source
        self.eos_id = tokenizer.token_to_id(END_OF_TEXT)
        self.quantized = False  # int8 weights (an int8-compressed copy): set by `load`
        self.template = None
        if chat:
            try:
                self.template = ChatTemplate(tokenizer)
            except ChatDataError as e:
                raise ModelLoadError(f"{source}: a chat model, but {e}") from None

    @property
    def is_chat(self) -> bool:
        return self.template is not None

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> TextModel:
        folder = Path(folder)
        missing = missing_files(folder)
        if missing:
            raise ModelLoadError(f"{folder} is not a model folder: {', '.join(missing)} missing")
        cfg = read_config(folder)
        try:
            tokenizer = load_tokenizer(folder / TOKENIZER)
        except TokenizerError as e:
            raise ModelLoadError(str(e)) from None
        if not (folder / WEIGHTS).is_file():  # int8 weights, int8 matrix products on CPU
            try:
                model = load_int8(folder, cfg)
            except (ValueError, OSError) as e:
                raise ModelLoadError(f"{folder / INT8_WEIGHTS}: {e}") from None
            loaded = cls(model, tokenizer, str(folder), chat=is_chat_model(folder))
            loaded.quantized = True
            return loaded
        model = GPT(cfg)
        try:
            load_weights(model, folder / WEIGHTS)
        except WeightsError as e:
            raise ModelLoadError(str(e)) from None
        chat = is_chat_model(folder)
        return cls(model.to(device), tokenizer, str(folder), chat=chat)

    @property
    def context(self) -> int:
        return self.model.cfg.seq_len

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
        """A base model continues each prompt (up to end-of-text); a chat model answers each
        prompt as a user message. Prompts longer than the context keep their last tokens."""
        if not prompts:
            return []
        if self.template is not None:
            return self.reply([[Message("user", p)] for p in prompts], settings)
        return self.complete(prompts, settings)

    def complete(self, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
        """Continue each prompt as plain text, up to end-of-text, chat model or not."""
        if not prompts:
            return []
        s = settings or GenerationSettings()
        new, keep = self._budget(s)
        ids = [(self.encode(p) or [self.eos_id])[-keep:] for p in prompts]
        return [self.decode(o) for o in self._generate(ids, new, s, (self.eos_id,))]

    def reply(self, conversations: list, settings: GenerationSettings | None = None) -> list[str]:
        """A chat model's next assistant turn for each conversation (a list of `Message`s, the
        last one the user's); the oldest turns drop out when the context is full."""
        if self.template is None:
            raise ModelLoadError(f"{self.source} is not a chat model (no {CHAT}): use generate()")
        if not conversations:
            return []
        s = settings or GenerationSettings()
        new, keep = self._budget(s)
        ids = [self.template.prompt_ids(conv, max_len=keep) for conv in conversations]
        return [self.template.decode_reply(o) for o in self._generate(ids, new, s, self.template.stop_ids)]

    def _budget(self, s: GenerationSettings) -> tuple[int, int]:
        """(new tokens, prompt tokens kept): both fit the context."""
        new = max(1, min(s.max_new_tokens, self.context - 1))
        return new, self.context - new

    # ------------------------------------------------------------------ whole prompts (serving)

    def prompt_ids(self, prompt: str | Sequence[Message]) -> list[int]:
        """A prompt's ids, whole. A chat model reads a string as a user message and a list of
        `Message`s as a conversation, and is asked for the next assistant turn; a base model
        continues a string as plain text and has no use for a conversation (ModelLoadError)."""
        if isinstance(prompt, str):
            if self.template is None:
                return self.encode(prompt) or [self.eos_id]
            prompt = [Message("user", prompt)]
        if self.template is None:
            raise ModelLoadError(
                f"{self.source} is a pretrained (base) model, not a chat model: it has no chat template and "
                "continues plain text; give it a prompt, or use a fine-tuned chat model for messages"
            )
        return self.template.prompt_ids(prompt)

    def fit(self, prompt_tokens: int, max_new_tokens: int | None) -> int:
        """The new tokens to generate after a prompt of `prompt_tokens`: `max_new_tokens` when the
        context holds both, else ContextOverflow. None asks for the default, as many as the
        context leaves up to DEFAULT_MAX_NEW_TOKENS."""
        room = self.context - prompt_tokens
        if room < 1:
            raise ContextOverflow(
                f"the prompt is {prompt_tokens} tokens: the model's context of {self.context} tokens "
                "leaves no room for new ones; shorten it"
            )
        if max_new_tokens is None:
            return min(DEFAULT_MAX_NEW_TOKENS, room)
        if max_new_tokens > room:
            raise ContextOverflow(
                f"the prompt ({prompt_tokens} tokens) and max_new_tokens ({max_new_tokens}) exceed the model's "
                f"context of {self.context} tokens: ask for at most {room} new tokens, or shorten the prompt"
            )
        return max_new_tokens

    def generate_ids(self, ids: list[list[int]], settings: GenerationSettings) -> list[str]:
        """The text generated after each prompt given as whole ids (`prompt_ids`), up to
        `settings.max_new_tokens` (which, with every prompt, must fit the context: see `fit`):
        a chat model's reply up to `<|end|>`, a base model's continuation up to end-of-text."""
        if not ids:
            return []
        longest = max(map(len, ids))
        self.fit(longest, settings.max_new_tokens)
        if self.template is None:
            outs = self._generate(ids, settings.max_new_tokens, settings, (self.eos_id,))
            return [self.decode(o) for o in outs]
        outs = self._generate(ids, settings.max_new_tokens, settings, self.template.stop_ids)
        return [self.template.decode_reply(o) for o in outs]

    def _generate(self, ids: list[list[int]], new: int, s: GenerationSettings, stop: tuple[int, ...]):
        device = self.model.embed.weight.device
        gen = torch.Generator(device=device).manual_seed(s.seed)
        return self.model.generate(
            ids, new, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, stop_tokens=stop, generator=gen
        )
