"""The embedded server's app retries a request the API refused with 503 (a SQLite lock conflict),
replaying the same body, so that the client is not sent into its 2-second backoff; and it makes
one API request itself before the server reports that it has started."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lmforge.embedded_app import RetryServiceUnavailable, WarmUp

FAST = (0.001, 0.001, 0.001)


class FlakyApp:
    """Refuses the first `refusals` requests with 503 (re-raising after the response, as
    Starlette's error middleware does), then echoes the request body."""

    def __init__(self, refusals: int, status: int = 503):
        self.refusals = refusals
        self.status = status
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message["body"])
        if len(self.bodies) <= self.refusals:
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": b'{"exception_message": "locked"}'})
            raise RuntimeError("database is locked")
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": message["body"]})


def post(app, body: bytes) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/api/task_runs/", content=body)

    return asyncio.run(go())


def test_a_refused_request_is_replayed_with_its_body_until_it_succeeds():
    app = FlakyApp(refusals=2)
    response = post(RetryServiceUnavailable(app, FAST), b'{"name": "t-1"}')
    assert response.status_code == 201 and response.content == b'{"name": "t-1"}'
    assert app.bodies == [b'{"name": "t-1"}'] * 3


def test_the_503_reaches_the_client_once_the_retries_are_spent():
    app = FlakyApp(refusals=10)
    response = post(RetryServiceUnavailable(app, FAST), b"{}")
    assert response.status_code == 503 and b"locked" in response.content
    assert len(app.bodies) == len(FAST) + 1  # then the client retries, as without this wrapper


@pytest.mark.parametrize("status", [400, 500])
def test_other_errors_are_answered_at_once(status):
    app = FlakyApp(refusals=1, status=status)
    response = post(RetryServiceUnavailable(app, FAST), b"{}")
    assert response.status_code == status and len(app.bodies) == 1


class StartingApp:
    """Completes its lifespan startup at once; records what happens, in order."""

    def __init__(self, fail_requests: bool = False):
        self.events: list[str] = []
        self.fail_requests = fail_requests

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            return
        self.events.append(f"request {scope['path']}")
        if self.fail_requests:
            raise RuntimeError("not ready")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'"3.9.1"'})


def start(app: WarmUp) -> list[str]:
    """Run the app's lifespan startup as uvicorn does; returns what happened, in order (the
    wrapped app's requests, and the messages uvicorn was sent)."""
    inner = app.app

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        inner.events.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return inner.events


def test_the_server_reports_it_has_started_only_after_one_api_request_went_through():
    assert start(WarmUp(StartingApp())) == ["request /api/admin/version", "lifespan.startup.complete"]


def test_a_failed_warm_up_does_not_keep_the_server_from_starting():
    assert start(WarmUp(StartingApp(fail_requests=True))) == ["request /api/admin/version", "lifespan.startup.complete"]
