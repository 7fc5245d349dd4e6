"""The OpenAI-compatible API under ``/v1``: models, chat, completions and embeddings.

Authenticated by a project's API key (``grappe keys create``); errors follow the
OpenAI shape so the official clients show them as they would any provider's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from grappe.api.limits import TooManyFailures, client_address
from grappe.gateway.errors import GatewayError
from grappe.gateway.service import Gateway
from grappe.services.errors import Unauthorized
from grappe.store.gateway import KeyInfo


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error of ``/v1``, in the shape OpenAI's clients read."""

    error: OpenAIErrorDetail


# Every answer /v1 gives, so clients (and the fuzzing tests) know them; 413 stays Grappe's own.
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": description}
    for status, description in (
        (400, "the request is not one the model can serve (the param names the field)"),
        (401, "no API key, or not a valid one"),
        (402, "the key's project has used its token budget"),
        (404, "the model is not served here"),
        (429, "over the key's limits, or too many bad keys from here; see Retry-After"),
        (502, "the replica answered with an error"),
        (503, "no healthy replica of the model"),
    )
}
EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] at the end"}},
}
STREAMED = {
    200: {
        "description": "the answer; server-sent events (ending with [DONE]) when stream is true",
        "content": {"application/json": {}, "text/event-stream": {"schema": EVENT}},
    }
}


def _body(required: list[str], **properties: Any) -> dict[str, Any]:
    """The JSON body a /v1 operation reads (the gateway checks it; other fields pass through)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_MODEL = {"type": "string", "description": "a model that GET /v1/models lists"}
_GENERATION = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0},
    "seed": {"type": "integer"},
    "stream": {"type": "boolean"},
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
}

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class _BadKey(Unauthorized):
    """A key that is not valid, counted as a failed authentication like a bad member token."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _key(request: Request) -> KeyInfo:
    """The key's grant; guessing keys is rate-limited per address with member tokens."""
    gw = _gateway(request)
    token = _token(request)
    if not token:  # nothing guessed: a plain 401, not counted
        return gw.key(token)

    def attempt() -> KeyInfo:
        try:
            return gw.key(token)
        except GatewayError as exc:
            if exc.status != 401:
                raise
            raise _BadKey(exc) from None

    try:
        return request.app.state.auth_failures.guard(  # type: ignore[no-any-return]
            client_address(request), attempt
        )
    except _BadKey as bad:
        raise bad.error from None
    except TooManyFailures as exc:
        wait = int(exc.headers["Retry-After"])
        raise GatewayError(429, exc.message, "rate_limit_error", exc.code, None, wait) from None


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers())


@router.get("/models")
async def models(request: Request) -> Response:
    """The models the key's project may call."""
    gw = _gateway(request)
    try:
        key = _key(request)
    except GatewayError as exc:
        return _error(exc)
    return JSONResponse({"object": "list", "data": gw.models(key)})


async def _serve(request: Request, task: str) -> Response:
    gw = _gateway(request)
    try:
        key = _key(request)
        return await gw.handle(task, await request.body(), key)
    except GatewayError as exc:
        return _error(exc)


@router.post(
    "/chat/completions",
    responses=STREAMED,
    openapi_extra=_body(
        ["model", "messages"],
        model=_MODEL,
        messages={"type": "array", "items": _MESSAGE},
        **_GENERATION,
    ),
)
async def chat(request: Request) -> Response:
    """A chat completion, streamed as server-sent events when ``stream`` is true."""
    return await _serve(request, "chat")


@router.post(
    "/completions",
    responses=STREAMED,
    openapi_extra=_body(
        ["model", "prompt"], model=_MODEL, prompt={"type": "string"}, **_GENERATION
    ),
)
async def completions(request: Request) -> Response:
    """A text completion, streamed when ``stream`` is true."""
    return await _serve(request, "completion")


@router.post(
    "/embeddings",
    openapi_extra=_body(
        ["model", "input"],
        model=_MODEL,
        input={"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        encoding_format={"type": "string", "enum": ["float", "base64"]},
    ),
)
async def embeddings(request: Request) -> Response:
    """Vectors for one text or a list of texts."""
    return await _serve(request, "embedding")
