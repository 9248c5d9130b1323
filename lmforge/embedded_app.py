"""The ASGI app the embedded server runs: Prefect's API, retrying SQLite lock conflicts itself,
and ready to answer its first request as fast as the others.

On SQLite, a write that meets another writer mid-transaction (the server's own task-run
recorder and event persister write while the flow's requests do) fails at once with "database
is locked", which Prefect answers with a 503. The client then backs off for about two seconds
before retrying, so a 5-second lifecycle could spend several seconds asleep. The conflict clears
in milliseconds, so this wrapper retries the request inside the server after a short pause;
only when that keeps failing does the 503 reach the client, which then retries as before.
A request is replayed only when the app answered 503 before sending a byte of its body: the
failed transaction was rolled back, exactly as when the client sends the request again.

FastAPI builds its route-matching tables on the first request that reaches Prefect's routers
(0.2-0.5 s on a small machine; the health check is answered before them). A command's first
API call would wait for that, so `WarmUp` makes one such request itself before the server
reports that it has started: the work moves into the boot, which the command overlaps with
its own imports.

It lives as long as the command that started it holds its stdin open (`exit_with_stdin`): a
command killed outright leaves no server behind, and a finished one need not wait for its
server's shutdown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_DELAYS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.5, 0.5, 0.5)  # about 2 s in all


class RetryServiceUnavailable:
    """Replays an HTTP request whose response would be a 503, after a short pause."""

    def __init__(self, app: ASGIApp, delays_s: tuple[float, ...] = RETRY_DELAYS_S):
        self.app = app
        self.delays_s = delays_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        for delay in (*self.delays_s, None):
            refused = await self._attempt(scope, body, send, last=delay is None)
            if not refused:
                return
            await asyncio.sleep(delay)

    async def _attempt(self, scope: Scope, body: bytes, send: Send, last: bool) -> bool:
        """Run the app once; True when it answered 503 and nothing was sent (so it may be replayed)."""
        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if sent_body:  # the app reads again after the body: it waits for the client to go
                await asyncio.Event().wait()
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}

        refused = False

        async def forward(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503 and not last:
                refused = True
            if not refused:
                await send(message)

        # each attempt gets its own scope: the app keeps per-request things in it (FastAPI its
        # dependency exit stacks), which the first attempt has closed
        fresh = {**scope, "state": dict(scope["state"])} if "state" in scope else dict(scope)
        try:
            await self.app(fresh, replay, forward)
        except Exception:
            if not refused:
                raise
            # Starlette re-raises the error behind the 503 after sending it, for the server's log
        return refused


class WarmUp:
    """Sends `path` to the app once its startup is done, before telling the server so."""

    def __init__(self, app: ASGIApp, path: str = "/api/admin/version"):
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def request() -> None:
            import httpx  # only for the app's warm-up request

            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://embedded") as client:
                await client.get(self.path)

        async def warm_then_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:  # in a task of its own: the startup holds limiter tokens the request would take
                    await asyncio.create_task(request())
                except Exception:  # a warm-up only: the server works without it
                    pass
            await send(message)

        await self.app(scope, receive, warm_then_send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def exit_with_stdin(grace_s: float = 30.0) -> None:
    """Shut this server down once its stdin reaches its end: the command that started it holds the
    other end, and closes it to stop the server, or is gone (however it ended, SIGKILL included).
    The shutdown is uvicorn's own (SIGTERM: the services stop, the database is closed); should it
    not be done within `grace_s`, the process exits regardless."""

    def watch() -> None:
        sys.stdin.buffer.read()  # returns at the end of input only: the other end has closed
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-stdin", daemon=True).start()


def create_app() -> ASGIApp:
    """The uvicorn factory: Prefect's server app (ephemeral, no UI), wrapped."""
    from prefect.server.api.server import create_app as prefect_app  # in the server's process only

    from lmforge.embedded import EXIT_WITH_STDIN

    if os.environ.get(EXIT_WITH_STDIN) == "1":
        exit_with_stdin()
    return RetryServiceUnavailable(WarmUp(prefect_app()))
