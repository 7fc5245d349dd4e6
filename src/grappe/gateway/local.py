"""Requests served by the in-process engine, answered in the OpenAI wire format."""

from __future__ import annotations

import base64
import json
from array import array
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from grappe.gateway import engine as eng
from grappe.gateway.errors import GatewayError, bad_request
from grappe.store.gateway import KeyInfo

if TYPE_CHECKING:
    from grappe.gateway.service import Deployment, Gateway

_END = object()


def check_body(task: str, body: dict[str, Any]) -> None:
    """The fields each endpoint needs, with a message naming the field and the fix."""
    if task == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: give a non-empty list of {role, content}", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(
                    f"messages[{i}]: each message needs a role and content", "messages"
                )
    elif task == "completion":
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or not prompt:
            raise bad_request("prompt: give the text to complete", "prompt")
    else:
        given = body.get("input")
        if not (
            (isinstance(given, str) and given)
            or (isinstance(given, list) and given and all(isinstance(t, str) for t in given))
        ):
            raise bad_request("input: give a string or a list of strings to embed", "input")
    if body.get("n") not in (None, 1):
        raise bad_request(f"n: only one choice is served (got {body.get('n')!r})", "n")
    if "max_tokens" in body and body["max_tokens"] is not None:
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise bad_request(
                f"max_tokens: give a positive integer (got {body['max_tokens']!r})", "max_tokens"
            )


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request sends, to estimate its tokens when no engine counts them."""
    if "messages" in body:
        return "\n".join(
            eng._text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
        )
    given = body.get("prompt", body.get("input", ""))
    return given if isinstance(given, str) else "\n".join(str(p) for p in given)


async def serve(
    gw: Gateway, d: Deployment, task: str, body: dict[str, Any], key: KeyInfo
) -> Response:
    if task == "embedding":
        return await _embed(gw, d, body, key)
    if not d.path:
        raise GatewayError(
            503, f"model {d.model!r} has no directory to load", "service_unavailable"
        )
    lm = gw.language_model(d.path)
    gen = await anyio.to_thread.run_sync(_generation, lm, task, body)
    if body.get("stream"):
        return _stream(gw, d, lm, task, gen, body, key)
    text, prompt, completion, finish = await anyio.to_thread.run_sync(lm.generate, gen)
    gw.charge(key, d.model, prompt, completion)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if task == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        obj, kind = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj, kind = "text_completion", "cmpl"
    return JSONResponse(
        {
            "id": eng.completion_id(kind),
            "object": obj,
            "created": eng.now_s(),
            "model": d.model,
            "choices": [choice],
            "usage": usage,
        }
    )


def _generation(lm: eng.CausalLM, task: str, body: dict[str, Any]) -> eng.Generation:
    if task == "chat":
        prompt = lm.chat_prompt(body["messages"])
    else:
        given = body["prompt"]
        if isinstance(given, list):
            if len(given) != 1 or not isinstance(given[0], str):
                raise bad_request(
                    "prompt: give one string (lists of prompts are not served)", "prompt"
                )
            given = given[0]
        prompt = given
    stop = body.get("stop")
    return eng.Generation(
        prompt=prompt,
        max_tokens=body.get("max_tokens")
        or body.get("max_completion_tokens")
        or eng.DEFAULT_NEW_TOKENS,
        temperature=float(
            body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0
        ),
        top_p=float(body.get("top_p") or 1.0),
        stop=[stop] if isinstance(stop, str) else stop,
        seed=body.get("seed"),
    )


def _stream(
    gw: Gateway,
    d: Deployment,
    lm: eng.CausalLM,
    task: str,
    gen: eng.Generation,
    body: dict[str, Any],
    key: KeyInfo,
) -> StreamingResponse:
    chat = task == "chat"
    ident = eng.completion_id("chatcmpl" if chat else "cmpl")
    created = eng.now_s()
    obj = "chat.completion.chunk" if chat else "text_completion"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def event(choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": d.model,
            "choices": [] if choice is None else [choice],
        }
        if usage is not None:
            data["usage"] = usage
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def piece(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if first:
                delta["role"] = "assistant"
            return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}

    async def events() -> AsyncIterator[bytes]:
        it: Iterator[Any] = lm.stream(gen)
        if chat:
            yield event(piece("", None, first=True))
        try:
            while True:
                item = await anyio.to_thread.run_sync(next, it, _END)
                if item is _END:
                    break
                if isinstance(item, tuple):
                    prompt, completion, finish = item
                    gw.charge(key, d.model, prompt, completion)
                    yield event(piece(None, finish))
                    if include_usage:
                        total = prompt + completion
                        usage = {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": total,
                        }
                        yield event(None, usage)
                    break
                yield event(piece(item, None))
        except Exception as exc:  # the client gets a clean end, never a cut connection
            yield GatewayError(500, f"the engine failed while generating: {exc}", "api_error").sse()
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _embed(gw: Gateway, d: Deployment, body: dict[str, Any], key: KeyInfo) -> Response:
    given = body["input"]
    texts = [given] if isinstance(given, str) else list(given)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad_request(f"encoding_format: use float or base64 (got {fmt!r})", "encoding_format")
    vectors, tokens = await anyio.to_thread.run_sync(gw.embedder.embed, texts)
    gw.charge(key, d.model, tokens, 0)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(array("f", v).tobytes()).decode()
            if fmt == "base64"
            else v,
        }
        for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": d.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
