"""A small OpenAI-compatible server to stand for vLLM or TGI as an upstream replica.

It answers ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (streamed
and not) and ``/v1/embeddings`` with words that name it, so a test sees which replica
answered. Run it as ``python tests/openai_upstream.py --port P --name A``; the routing
tests kill it with SIGKILL to see a replica die, and ``bench/gateway.py`` uses it as the
fast upstream it measures the gateway against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def make_app(name: str, model: str, tokens: int, delay_s: float) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": model, "object": "model", "owned_by": name}]}
        )

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        if body.get("model") != model:
            return web.json_response(
                {"error": {"message": f"no model {body.get('model')}", "type": "x", "code": None}},
                status=404,
            )
        n = int(body.get("max_tokens") or tokens)
        words = [f"{name}{i}" for i in range(n)]
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        base = {"id": f"x-{name}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            if delay_s:
                await asyncio.sleep(delay_s * n)
            text = " ".join(words)
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text}
            )
            obj = "chat.completion" if chat else "text_completion"
            return web.json_response(
                {
                    **base,
                    "object": obj,
                    "choices": [{**choice, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i, word in enumerate(words):
            piece = ("" if i == 0 else " ") + word
            choice = (
                {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            )
            event = {**base, "object": obj, "choices": [{**choice, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if delay_s:
                await asyncio.sleep(delay_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**base, "object": obj, "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embed(request: web.Request) -> web.Response:
        body = await request.json()
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [1.0, 0.0]} for i in range(len(texts))
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/embeddings", embed)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="an OpenAI-compatible test upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="up")
    parser.add_argument("--model", default="m")
    parser.add_argument("--tokens", type=int, default=8, help="words in each answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between words")
    args = parser.parse_args()
    app = make_app(args.name, args.model, args.tokens, args.delay)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
