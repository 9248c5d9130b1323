"""Text and numbers as an orchestrator's UI shows them well.

Prefect's UI renders every text cell of a table artifact as Markdown: a token `__init__` turns
into a bold "init", `<|end|>` into an HTML tag that vanishes, a path's `*` into italics. So data
shown there is escaped first, and kept on one line; numbers are rounded to what a reader compares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that mean something
# in a line of Markdown (emphasis, code, links, HTML, tables, headings, lists, strikethrough).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-!|~&])")
SIGNIFICANT_DIGITS = 4


def md_escape(text: Any) -> str:
    """`text` as Markdown that shows exactly it, on one line."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def rounded(value: Any) -> Any:
    """A float to SIGNIFICANT_DIGITS digits (whole numbers from 10,000 on); anything else as it is."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    return round(value) if abs(value) >= 10_000 else float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def model_label(inputs: Mapping[str, str]) -> str:
    """`chat` or `base`: the model a stage run is about (its inputs name a finetune artifact or
    not), which keys its UI artifacts apart: a lifecycle evaluates and registers both."""
    return "chat" if "finetune" in inputs else "base"


def ordered(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> list[dict[str, Any]]:
    """Rows with `columns` first, in that order, then any others (the UI takes the order of the first
    row's keys, and a manifest stores its keys sorted)."""
    rows, columns = list(rows), tuple(columns)
    order = [*columns, *(k for k in (rows[0] if rows else {}) if k not in columns)]
    return [{k: row.get(k, "") for k in order} for row in rows]
