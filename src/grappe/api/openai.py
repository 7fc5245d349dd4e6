"""The OpenAI-compatible API under ``/v1``: models, chat, completions and embeddings.

Served by a plain ASGI layer in front of the rest of the API, so a request to a
model pays for no router, validation or middleware it does not need (the
gateway's overhead is measured by ``bench/gateway.py``). Authenticated by a
project's API key (``grappe keys create``); errors follow the OpenAI shape so the
official clients show them as they would any provider's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from grappe.api.limits import TooManyFailures
from grappe.gateway.errors import GatewayError
from grappe.gateway.service import Gateway
from grappe.services.errors import Unauthorized
from grappe.store.gateway import KeyInfo

MAX_BODY_BYTES = 2 * 1024 * 1024
TASKS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}


class OpenAIEdge:
    """ASGI middleware: ``/v1/…`` goes straight to the gateway, anything else to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        gateway: Gateway = scope["app"].state.gateway
        try:
            response = await _answer(gateway, scope, receive)
        except GatewayError as exc:
            response = JSONResponse(exc.body(), exc.status, headers=exc.headers())
        if isinstance(response, StreamingResponse):
            await _stream(response, receive, send)
        else:
            await response(scope, receive, send)


async def _stream(response: StreamingResponse, receive: Receive, send: Send) -> None:
    """Send a stream's events as they come; stop, and close its source, if the client leaves.

    One plain task watches for the disconnect (the server says nothing on a send to a
    closed connection), cheaper than the task group a Starlette response starts.
    """
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    gone = asyncio.ensure_future(receive())
    body = response.body_iterator
    try:
        async for chunk in body:
            if gone.done():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()
        await body.aclose()  # type: ignore[attr-defined]  # its source charges what was sent


async def _answer(gateway: Gateway, scope: Scope, receive: Receive) -> Response:
    path, method = scope["path"].rstrip("/"), scope["method"]
    task = TASKS.get(path)
    if path == "/v1/models" and method == "GET":
        key = _key(gateway, scope)
        return JSONResponse({"object": "list", "data": gateway.models(key)})
    if task is None:
        raise GatewayError(
            404, f"no endpoint {method} {path}", "invalid_request_error", "not_found"
        )
    if method != "POST":
        raise GatewayError(405, f"{path} takes POST", "invalid_request_error", "method_not_allowed")
    key = _key(gateway, scope)
    return await gateway.handle(task, await _body(receive), key)


class _BadKey(Unauthorized):
    """A key that is not valid, counted as a failed authentication like a bad member token."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _key(gateway: Gateway, scope: Scope) -> KeyInfo:
    """The key's grant; guessing keys is rate-limited per address with member tokens."""
    token = _token(scope)
    if not token:  # nothing guessed: a plain 401, not counted
        return gateway.key(token)

    def attempt() -> KeyInfo:
        try:
            return gateway.key(token)
        except GatewayError as exc:
            if exc.status != 401:
                raise
            raise _BadKey(exc) from None

    client = scope.get("client")
    try:
        return scope["app"].state.auth_failures.guard(  # type: ignore[no-any-return]
            client[0] if client else "unknown", attempt
        )
    except _BadKey as bad:
        raise bad.error from None
    except TooManyFailures as exc:
        wait = int(exc.headers["Retry-After"])
        raise GatewayError(429, exc.message, "rate_limit_error", exc.code, None, wait) from None


def _token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def _body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "the client went away", "invalid_request_error")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(
                413,
                f"the request body is over {MAX_BODY_BYTES} bytes; send less",
                "invalid_request_error",
            )
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


# ------------------------------------------------------------------ the OpenAPI document
#
# The edge answers /v1 before any route, so these operations are described by a router
# that is never mounted: its handlers are never called, only its document is merged.


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error of ``/v1``, in the shape OpenAI's clients read."""

    error: OpenAIErrorDetail


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": description}
    for status, description in (
        (400, "the request is not one the model can serve (param names the field)"),
        (401, "no API key, or not a valid one"),
        (402, "the key's project has used its token budget"),
        (404, "the model is not served here"),
        (413, f"the body is over {MAX_BODY_BYTES} bytes"),
        (
            429,
            "over the key's requests or tokens per minute, or too many bad keys; see Retry-After",
        ),
        (502, "the replica answered with an error"),
        (503, "no healthy replica of the model"),
    )
}

# Every call reads the key; only a call to a model can meet the rest.
_KEY_ERRORS = {status: OPENAI_ERRORS[status] for status in (401, 429)}
_MODEL_ERRORS = {s: e for s, e in OPENAI_ERRORS.items() if s not in _KEY_ERRORS}


def _json(schema: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_LIST = {"type": "array", "items": {"type": "object"}}
_EVENT = _object(["data"], data={"type": "string", "description": "a JSON chunk, or [DONE]"})


def _streamed(answer: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {
        **_MODEL_ERRORS,
        200: {
            "description": "the answer; server-sent events ending with [DONE] when stream is true",
            "content": {
                "application/json": {"schema": answer},
                "text/event-stream": {"schema": _EVENT},
            },
        },
    }


def _reads(required: list[str], **properties: Any) -> dict[str, Any]:
    """The JSON body an operation reads (the gateway checks it; other fields pass through)."""
    schema = _object(required, **properties)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_MODEL = {"type": "string", "description": "a model that GET /v1/models lists"}
_GENERATION = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0},
    "seed": {"type": "integer"},
    "stream": {"type": "boolean"},
}
_MESSAGE = _object(["role", "content"], role={"type": "string"}, content={"type": "string"})
_COMPLETION = _object(
    ["object", "model", "choices"], object={"type": "string"}, model=_MODEL, choices=_LIST
)

_documented = APIRouter(prefix="/v1", tags=["openai"], responses=_KEY_ERRORS)


@_documented.get(
    "/models",
    responses=_json(
        _object(["object", "data"], object={"type": "string"}, data=_LIST), "the models"
    ),
)
def list_models() -> None:
    """The models the key's project may call."""


@_documented.post(
    "/chat/completions",
    responses=_streamed(_COMPLETION),
    openapi_extra=_reads(
        ["model", "messages"],
        model=_MODEL,
        messages={"type": "array", "items": _MESSAGE},
        **_GENERATION,
    ),
)
def create_chat_completion() -> None:
    """A chat completion, streamed as server-sent events when ``stream`` is true."""


@_documented.post(
    "/completions",
    responses=_streamed(_COMPLETION),
    openapi_extra=_reads(
        ["model", "prompt"], model=_MODEL, prompt={"type": "string"}, **_GENERATION
    ),
)
def create_completion() -> None:
    """A text completion, streamed when ``stream`` is true."""


@_documented.post(
    "/embeddings",
    responses={
        **_MODEL_ERRORS,
        **_json(
            _object(
                ["object", "data", "model"], object={"type": "string"}, data=_LIST, model=_MODEL
            ),
            "the vectors",
        ),
    },
    openapi_extra=_reads(
        ["model", "input"],
        model=_MODEL,
        input={"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        encoding_format={"type": "string", "enum": ["float", "base64"]},
    ),
)
def create_embedding() -> None:
    """Vectors for one text or a list of texts."""


def document(app: FastAPI) -> None:
    """Add the ``/v1`` operations, served by :class:`OpenAIEdge`, to the app's OpenAPI document."""
    plain: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()  # cached by FastAPI; completed here once
            v1 = get_openapi(title=app.title, version=app.version, routes=_documented.routes)
            schema["paths"].update(v1["paths"])
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(v1.get("components", {}).get("schemas", {}))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
