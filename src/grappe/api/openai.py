"""The OpenAI-compatible API under ``/v1``: models, chat, completions and embeddings.

Authenticated by a project's API key (``grappe keys create``); errors follow the
OpenAI shape so the official clients show them as they would any provider's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from grappe.gateway.errors import GatewayError
from grappe.gateway.service import Gateway

router = APIRouter(prefix="/v1", tags=["openai"])


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers())


@router.get("/models")
async def models(request: Request) -> Response:
    """The models the key's project may call."""
    gw = _gateway(request)
    try:
        key = gw.key(_token(request))
    except GatewayError as exc:
        return _error(exc)
    return JSONResponse({"object": "list", "data": gw.models(key)})


async def _serve(request: Request, task: str) -> Response:
    gw = _gateway(request)
    try:
        key = gw.key(_token(request))
        return await gw.handle(task, await request.body(), key)
    except GatewayError as exc:
        return _error(exc)


@router.post("/chat/completions")
async def chat(request: Request) -> Response:
    """A chat completion, streamed as server-sent events when ``stream`` is true."""
    return await _serve(request, "chat")


@router.post("/completions")
async def completions(request: Request) -> Response:
    """A text completion, streamed when ``stream`` is true."""
    return await _serve(request, "completion")


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    """Vectors for one text or a list of texts."""
    return await _serve(request, "embedding")
