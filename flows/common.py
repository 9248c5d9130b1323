"""What every flow shares: the type of its `config` parameter, and its decorator options.

`ConfigParameter` is a `Config`, validated by Config itself, whose JSON schema Prefect is handed
ready-made.

Prefect derives a flow's parameter schema (the form of its deployment in the UI, what the API
checks a run's parameters against) from the flow's signature: once when the flow is defined,
and again at each `with_options`. For the nested Config that took 80 ms per flow, the same
schema every time: about a second at the start of every command (ten flows) and 0.2 s of every
lifecycle run (`with_runner`). It is computed once here, and is the schema Prefect would derive
(tests/test_deployments.py compares the two). Inside a flow, `config` is a `Config`.
"""

from __future__ import annotations

import errno
import logging
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema

from lm_core.config import Config
from lm_core.crawl.sources import CrawlInputError
from tasks.ui_artifacts import ui_artifacts_sent


def standalone_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each `$ref` to its `$defs` replaced by the definition: a schema that holds
    wherever it is placed (Prefect files a parameter model's definitions under a key of its own)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
                return {**target, **{k: resolve(v) for k, v in node.items() if k != "$ref"}}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve({k: v for k, v in schema.items() if k != "$defs"})


# `Any` underneath: pydantic would otherwise walk Config's whole core schema for every flow anyway.
ConfigParameter = Annotated[
    Any, PlainValidator(Config.model_validate), WithJsonSchema(standalone_schema(Config.model_json_schema()))
]

# Options every flow shares. A flow run ends only once the UI artifacts its stages handed to the
# sending thread are in the API (tasks/ui_artifacts.py), whichever way it ends.
STAGE_FLOW: dict[str, Any] = dict(
    log_prints=True,
    on_completion=[ui_artifacts_sent],
    on_failure=[ui_artifacts_sent],
    on_crashed=[ui_artifacts_sent],
    on_cancellation=[ui_artifacts_sent],
)


class _NoTracebackForInputErrors(logging.Filter):
    """Prefect logs a failed task or flow run with its traceback. For an error lmforge raises on
    purpose (a source that cannot be read, a crawl that kept no document, a missing artifact, an
    empty corpus: the classes of `lm_core`) or a full disk, the message is the whole story (it names
    the cause and the fix): the traceback, printed once per run level, would only bury it, in the
    terminal (with -v) and in the UI alike. Without -v the terminal shows no run log at all
    (lmforge/process.py); the command ends with the message as its one `error:` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _input_error(record.exc_info[1]):
            record.exc_info = record.exc_text = None
        return True


def _input_error(e: BaseException | None) -> bool:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    return isinstance(e, CrawlInputError) or type(e).__module__.split(".")[0] == "lm_core"


for _run_logger in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_run_logger).addFilter(_NoTracebackForInputErrors())
