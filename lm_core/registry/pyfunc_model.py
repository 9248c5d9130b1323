"""The registered model's code: an MLflow "models from code" pyfunc that MLflow stores with the
model and runs when the model is loaded (`mlflow.pyfunc.load_model`, `mlflow models serve`).

It loads the weights (safetensors), the model config and the tokenizer from the logged
artifacts with `TextModel.load`: nothing is unpickled. `lm_core` travels with the model in its
`code/` folder (see `log.py`), so the model loads wherever its pip requirements are installed.

Input: a table (`dataframe_records`) whose rows each hold one of

    prompt     a string: a base model continues it; a chat model reads it as a user message
    messages   a chat model only: an OpenAI-style conversation, [{"role", "content"}, ...]
               (roles system, user, assistant; a system message only first), answered with
               the next assistant turn through the chat template it was trained with

(the other one null where a request mixes both). A base model asked for `messages` refuses: it
has no chat template. Generation settings (`max_new_tokens`, `temperature` (0: greedy), `top_k`,
`top_p`, `seed`) come from `params`, and a column of the same name overrides them row by row (a
missing or null cell keeps the `params` value).

The context holds the prompt and the new tokens together. A row whose prompt and
`max_new_tokens` do not fit is refused (HTTP 400) with the model's context length and the most
it could ask for, as OpenAI-style APIs do: no prompt is cut. Without `max_new_tokens` a row gets
up to 64 new tokens, as many as the context leaves after its prompt.

Output: a table with one `text` column holding each row's continuation or reply (the prompt is
not repeated; a chat model's reply ends before its end token). `mlflow models serve` answers it
as `{"predictions": [{"text": "..."}, ...]}`, one record per input row, in order.

Importing this module loads nothing: it defines the class and hands an instance to MLflow's
`set_model` (the pointer MLflow reads after running this file); the weights are read in
`load_context`.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

MODEL_ARTIFACT = "model"  # the key under which `log.py` logs the model folder
PROMPT = "prompt"
MESSAGES = "messages"
TEXT = "text"
# Generation settings and their defaults; the same names are the `params` and the optional columns.
# max_new_tokens None: up to 64, as many as the context leaves after the prompt (TextModel.fit).
SETTINGS: dict[str, Any] = {"max_new_tokens": None, "temperature": 0.0, "top_k": None, "top_p": None, "seed": 0}
_INTEGER_SETTINGS = ("max_new_tokens", "top_k", "seed")
# The columns MLflow checks before `predict` (the signature's inputs, which `log.py` logs).
# Per-row settings are doubles so that a column with some null cells (NaN) still passes.
INPUT_SCHEMA = Schema(
    [
        ColSpec("string", PROMPT, required=False),
        ColSpec(Array(Object([Property("role", "string"), Property("content", "string")])), MESSAGES, required=False),
        *(ColSpec("double", k, required=False) for k in SETTINGS),
    ]
)
_SHOWN_PROBLEMS = 5  # a refused request names its first few bad rows


class TextGenerationModel(PythonModel):
    """Prompts or conversations in, continuations or replies out."""

    def load_context(self, context) -> None:
        import torch  # in the serving process, where MLflow loads this model's code

        from lm_core.textgen import TextModel  # on the path from the model's code/ folder

        config = context.model_config or {}
        device = config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.text_model = TextModel.load(context.artifacts[MODEL_ARTIFACT], device=device)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from lm_core.textgen import GenerationSettings  # with the model's code, at serving time

        rows = _records(model_input)
        defaults = {**SETTINGS, **{k: v for k, v in (params or {}).items() if k in SETTINGS and v is not None}}
        # Every row is checked before any is generated: one bad row refuses the request, by name.
        prompts: list[tuple[list[int], dict[str, Any]]] = []
        problems: list[str] = []
        for i, row in enumerate(rows):
            try:
                prompts.append(self._prompt(row, defaults))
            except ValueError as e:
                problems.append(f"row {i}: {e}")
        if problems:
            more = len(problems) - _SHOWN_PROBLEMS
            shown = "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more rows" if more > 0 else "")
            raise MlflowException.invalid_parameter_value(shown)
        # Rows that share their settings are generated as one batch.
        batches: dict[tuple, list[int]] = {}
        for i, (_, settings) in enumerate(prompts):
            batches.setdefault(tuple(settings.items()), []).append(i)
        texts: list[str] = [""] * len(prompts)
        for key, indices in batches.items():
            outs = self.text_model.generate_ids([prompts[i][0] for i in indices], GenerationSettings(**dict(key)))
            for i, text in zip(indices, outs, strict=True):
                texts[i] = text
        return pd.DataFrame({TEXT: texts})

    def _prompt(self, row: dict[str, Any], defaults: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
        """A row's prompt ids and settings, its new tokens fitted to the context; ValueError says
        why the row cannot be answered."""
        from lm_core.model_folder import ModelLoadError  # with the model's code, at serving time
        from lm_core.tokenize.chat_template import ChatDataError

        settings = _row_settings(row, defaults)
        try:
            ids = self.text_model.prompt_ids(_prompt_or_messages(row))
        except (ModelLoadError, ChatDataError) as e:
            raise ValueError(str(e)) from None
        settings["max_new_tokens"] = self.text_model.fit(len(ids), settings["max_new_tokens"])  # ContextOverflow
        return ids, settings


def _records(model_input: pd.DataFrame | list) -> list[dict[str, Any]]:
    """The input's rows as dicts: MLflow delivers a table (or, for `inputs` given as a list of
    objects, that list)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        return model_input
    raise MlflowException.invalid_parameter_value(
        f"expected rows with a {PROMPT!r} or a {MESSAGES!r} column, e.g. {{'dataframe_records': [{{'prompt': 'Hi'}}]}}"
        f" or {{'dataframe_records': [{{'messages': [{{'role': 'user', 'content': 'Hi'}}]}}]}}"
    )


def _is_null(value: Any) -> bool:
    """A cell with nothing in it: None, NaN (pandas fills a column's missing cells so), or []."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return not isinstance(value, str) and hasattr(value, "__len__") and len(value) == 0


def _prompt_or_messages(row: dict[str, Any]):
    """The row's `prompt` string or its `messages` as `Message`s: exactly one of them."""
    from lm_core.tokenize.chat_template import Message  # with the model's code, at serving time

    prompt, messages = row.get(PROMPT), row.get(MESSAGES)
    if _is_null(prompt) == _is_null(messages):
        given = "neither is set" if _is_null(prompt) else "not both"
        raise ValueError(f"give a {PROMPT!r} or {MESSAGES!r}: {given}")
    if not _is_null(prompt):
        if not isinstance(prompt, str):
            raise ValueError(f"{PROMPT!r} must be a string, is {type(prompt).__name__}")
        return prompt
    if isinstance(messages, str | dict) or not hasattr(messages, "__iter__"):
        raise ValueError(f"{MESSAGES!r} must be a list of {{'role': ..., 'content': ...}} objects")
    out = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{j}] must be an object with a string 'role' and 'content'")
        out.append(Message(m["role"], m["content"]))
    return out


def _row_settings(row: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The row's settings, checked: a cell overrides the default unless it is missing or null."""
    out = {}
    for name, default in defaults.items():
        value = row.get(name)
        value = default if value is None or (isinstance(value, float) and math.isnan(value)) else value
        if value is not None:
            value = int(value) if name in _INTEGER_SETTINGS else float(value)
        out[name] = value
    problems = [
        f"{name} must be {rule} (got {out[name]})"
        for name, rule, ok in (
            ("max_new_tokens", ">= 1", out["max_new_tokens"] is None or out["max_new_tokens"] >= 1),
            ("temperature", ">= 0 (0: greedy)", out["temperature"] >= 0),
            ("top_k", ">= 1 or null", out["top_k"] is None or out["top_k"] >= 1),
            ("top_p", "in (0, 1] or null", out["top_p"] is None or 0 < out["top_p"] <= 1),
        )
        if not ok
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return out


mlflow.models.set_model(TextGenerationModel())
