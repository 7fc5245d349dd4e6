"""Limits that protect the factory from its clients: body sizes and failed sign-ins.

A body is refused as soon as it is known to be too large: at once when its
``Content-Length`` says so, or while it streams in (a chunked body has no
length), before a handler holds it all. Failed authentications are counted
per client address; past ``GRAPPE_AUTH_FAILURES_PER_MINUTE`` in a minute the
client is answered 429 with ``Retry-After`` until the oldest failure is a
minute old, so guessing tokens costs more than it can win.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grappe.services.errors import ServiceError, Unauthorized
from grappe.settings import Settings

WINDOW_S = 60.0


class BodyTooLarge(HTTPException):
    """A body over its route's limit (413), raised while it is read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes; send less")


def body_limit(settings: Settings, path: str, method: str) -> int:
    """The most bytes a request to ``path`` may send: uploads and dataset files may send more."""
    if path.endswith("/uploads"):
        return settings.max_upload_bytes
    if path.startswith("/api/v1/datasets/") and method == "PUT":
        return settings.max_dataset_file_bytes
    return settings.max_body_bytes


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit_for(path, method)`` bytes, early."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"], scope["method"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_json(send, 413, "too_large", BodyTooLarge(limit).detail)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _send_json(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class TooManyFailures(ServiceError):
    """Too many failed authentications from one client (429, with ``Retry-After``)."""

    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(
            f"more than {limit} failed authentications from this address in a minute; "
            f"try again in {retry_after} s with a valid token"
        )
        self.headers = {"Retry-After": str(retry_after)}


class AuthFailures:
    """Failed authentications per client over the last minute (in this process)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._seen.setdefault(client, deque())
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """``TooManyFailures`` if ``client`` used up its failures for this minute."""
        if self.per_minute <= 0:
            return
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if len(times) >= self.per_minute:
                wait = max(1, int(WINDOW_S - (now - times[0]) + 0.999))
                raise TooManyFailures(wait, self.per_minute)

    def record(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(client, now).append(now)
            if len(self._seen) > 100_000:  # a flood of addresses must not grow memory forever
                self._seen = {k: v for k, v in self._seen.items() if v}

    def guard(self, client: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` (an authentication) unless ``client`` is blocked; count its failure."""
        self.check(client)
        try:
            return attempt()
        except Unauthorized:
            self.record(client)
            raise


def client_address(scope_or_request: Any) -> str:
    client = getattr(scope_or_request, "client", None)
    return client.host if client else "unknown"
