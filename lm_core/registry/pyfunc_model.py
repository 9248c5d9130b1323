"""The registered model's code: an MLflow "models from code" pyfunc that MLflow stores with the
model and runs when the model is loaded (`mlflow.pyfunc.load_model`, `mlflow models serve`).

It loads the weights (safetensors), the model config and the tokenizer from the logged
artifacts with `TextModel.load`: nothing is unpickled. `lm_core` travels with the model in its
`code/` folder (see `log.py`), so the model loads wherever its pip requirements are installed.

Input: a DataFrame with a `prompt` column. Generation settings (`max_new_tokens`,
`temperature` (0: greedy), `top_k`, `top_p`, `seed`) come from `params`, and a column of the
same name overrides them row by row (a missing or null cell keeps the `params` value).

Output: a DataFrame with one `text` column holding each prompt's continuation (the prompt
itself is not repeated). `mlflow models serve` answers it as
`{"predictions": [{"text": "..."}, ...]}`, one record per input row, in order.

Importing this module loads nothing: it defines the class and hands an instance to
`mlflow.models.set_model` (the pointer MLflow reads after running this file); the weights are
read in `load_context`.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

MODEL_ARTIFACT = "model"  # the key under which `log.py` logs the model folder
PROMPT = "prompt"
TEXT = "text"
# Generation settings and their defaults; the same names are the `params` and the optional columns.
SETTINGS: dict[str, Any] = {"max_new_tokens": 64, "temperature": 0.0, "top_k": None, "top_p": None, "seed": 0}
_INTEGER_SETTINGS = ("max_new_tokens", "top_k", "seed")


class TextGenerationModel(PythonModel):
    """Prompts in, continuations out."""

    def load_context(self, context) -> None:
        import torch  # in the serving process, where MLflow loads this model's code

        from lm_core.textgen import TextModel  # on the path from the model's code/ folder

        config = context.model_config or {}
        device = config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.text_model = TextModel.load(context.artifacts[MODEL_ARTIFACT], device=device)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from lm_core.textgen import GenerationSettings

        prompts = _prompts(model_input)
        defaults = {**SETTINGS, **{k: v for k, v in (params or {}).items() if k in SETTINGS and v is not None}}
        # Rows that share their settings are generated as one batch.
        batches: dict[tuple, list[int]] = {}
        for i, row in enumerate(model_input.to_dict("records")):
            settings = _row_settings(row, defaults)
            batches.setdefault(tuple(settings.items()), []).append(i)
        texts: list[str] = [""] * len(prompts)
        for key, rows in batches.items():
            outs = self.text_model.generate([prompts[i] for i in rows], GenerationSettings(**dict(key)))
            for i, text in zip(rows, outs, strict=True):
                texts[i] = text
        return pd.DataFrame({TEXT: texts})


def _prompts(model_input: pd.DataFrame) -> list[str]:
    """The prompts, checked: the signature makes MLflow deliver a table with a `prompt` column,
    but a null cell passes it."""
    if not isinstance(model_input, pd.DataFrame) or PROMPT not in model_input.columns:
        raise MlflowException.invalid_parameter_value(
            f"expected a table with a {PROMPT!r} column, e.g. {{'dataframe_records': [{{'prompt': 'Hello'}}]}}"
        )
    prompts = model_input[PROMPT].tolist()
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise MlflowException.invalid_parameter_value(f"{PROMPT!r} must be a string in every row; rows {bad} are not")
    return prompts


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
            ("max_new_tokens", ">= 1", out["max_new_tokens"] >= 1),
            ("temperature", ">= 0 (0: greedy)", out["temperature"] >= 0),
            ("top_k", ">= 1 or null", out["top_k"] is None or out["top_k"] >= 1),
            ("top_p", "in (0, 1] or null", out["top_p"] is None or 0 < out["top_p"] <= 1),
        )
        if not ok
    ]
    if problems:
        raise MlflowException.invalid_parameter_value("; ".join(problems))
    return out


mlflow.models.set_model(TextGenerationModel())
