"""UI artifacts (tables, markdown, links) sent to the Prefect API from a thread of their own.

Each is a round trip of about 20 ms to the API, which a stage used to wait for: 22 of them in
the tiny lifecycle, 0.4 s of its 10. `send_ui_artifact` hands Prefect's own `create_*_artifact`
call to the sending thread together with the caller's context (the run ids the artifact is
filed under, the client, the API it talks to: as Prefect's thread task runner does), and the
stage goes on. The flows' hooks call `ui_artifacts_sent` when a flow run ends, so that a flow
returns only once the UI shows everything its stages published; a command waits for them too
before its API server stops, and a process for what is left before it exits.

The UI is a convenience: an artifact that cannot be sent is logged, and never fails a stage.

Prefect's UI renders each text cell of a table as Markdown: `readable_table` escapes them (and
rounds numbers) so that a cell shows what the data holds.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from lm_core.ui_text import md_escape, rounded

logger = logging.getLogger("lmforge.ui_artifacts")

_outbox: queue.SimpleQueue = queue.SimpleQueue()
_all_sent = threading.Condition()
_unsent = 0
_sender: threading.Thread | None = None


def send_ui_artifact(create: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call `create(*args, **kwargs)` (e.g. `create_table_artifact`) on the sending thread, in the
    caller's context. Artifacts are sent in the order they were handed over."""
    global _unsent, _sender
    with _all_sent:
        _unsent += 1
        if _sender is None:
            _sender = threading.Thread(target=_send_forever, name="lmforge-ui-artifacts", daemon=True)
            _sender.start()
    _outbox.put((contextvars.copy_context(), create, args, kwargs))


SCHEDULE_HINT = (
    "**Started by hand, not by a deployment.** To run the flows on the config's `schedules` (the "
    "*Deployments* page lists them then, each with a *Run* button): `lmforge serve` serves them from "
    "its own process until Ctrl-C; `lmforge deploy` registers them with a work pool, whose workers "
    "(`prefect worker start --pool lmforge`) run them. See docs/servers-and-schedules.md."
)


def send_schedule_hint() -> None:
    """On a flow run started by hand (no deployment, no parent run): where deployments come from,
    for a user who looks for them. Keyless: shown with the run, not in the Artifacts list."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is not None and run.deployment_id is None and run.parent_task_run_id is None:
        send_ui_artifact(create_markdown_artifact, SCHEDULE_HINT, description="how to schedule this flow")


def readable_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows as the Prefect UI shows them as they are: text escaped (the UI renders it as
    Markdown), on one line; floats rounded. Columns keep the order of the first row's keys."""
    return [
        {col: md_escape(v) if isinstance(v, str) else rounded(v) if isinstance(v, float) else v for col, v in r.items()}
        for r in rows
    ]


def ui_artifacts_sent(*_hook_args: Any, timeout_s: float = 30.0) -> bool:
    """Wait until every artifact handed over so far has been sent (or failed); False on timeout.
    Takes and ignores a Prefect state hook's arguments (flow, flow_run, state)."""
    with _all_sent:
        return _all_sent.wait_for(lambda: _unsent == 0, timeout=timeout_s)


def _send_forever() -> None:
    global _unsent
    while True:
        context, create, args, kwargs = _outbox.get()
        try:
            context.run(create, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the UI is a convenience: never fail a stage over it
            logger.warning("could not send the UI artifact %r to the Prefect API: %s", kwargs.get("key"), e)
        finally:
            with _all_sent:
                _unsent -= 1
                _all_sent.notify_all()


atexit.register(ui_artifacts_sent, timeout_s=10.0)
