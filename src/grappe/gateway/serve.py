"""``python -m grappe.gateway.serve``: one model behind an OpenAI-compatible HTTP server.

This is what ``grappe serve`` runs as a service job on a site when the engine is
``grappe``: the in-process engine (a causal LM from a directory, or the packaged
embedding model) answering ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings`` like vLLM would.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from grappe.gateway import engine as eng
from grappe.gateway import local
from grappe.gateway.errors import GatewayError, bad_request
from grappe.store.gateway import KeyInfo

_ANYONE = KeyInfo(0, "local", 0, "local", None, None, None, None)


class _Engine:
    """What ``local.serve`` needs of a gateway, for one model and no accounting."""

    def __init__(self, path: str | None) -> None:
        self.embedder = eng.Embedder()
        self._lm = eng.CausalLM(path) if path else None

    def language_model(self, path: str) -> eng.CausalLM:
        assert self._lm is not None
        return self._lm

    def charge(self, key: KeyInfo, model: str, prompt: int, completion: int) -> None:
        return None  # the factory's gateway charges the project


def app(model: str, path: str | None, task: str) -> Starlette:
    from grappe.gateway.service import Deployment, _parse

    engine = _Engine(path)
    deployment = Deployment(model, "local", task, path)

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "grappe"}]}
        )

    def endpoint(kind: str) -> Any:
        async def handle(request: Request) -> Response:
            try:
                body = _parse(await request.body())
                if body.get("model") != model:
                    raise bad_request(f"model: this server serves {model!r}", "model")
                if (kind == "embedding") != (task == "embedding"):
                    raise bad_request(f"model {model!r} does not serve this endpoint", "model")
                local.check_body(kind, body)
                return await local.serve(engine, deployment, kind, body, _ANYONE)  # type: ignore[arg-type]
            except GatewayError as exc:
                return JSONResponse(exc.body(), exc.status, headers=exc.headers())

        return handle

    return Starlette(
        routes=[
            Route("/health", lambda _: Response("ok")),
            Route("/v1/models", models),
            Route("/v1/chat/completions", endpoint("chat"), methods=["POST"]),
            Route("/v1/completions", endpoint("completion"), methods=["POST"]),
            Route("/v1/embeddings", endpoint("embedding"), methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the name clients ask for")
    parser.add_argument("--path", help="the model's directory (saved with save_pretrained)")
    parser.add_argument("--task", choices=["chat", "embedding"], default="chat")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.task == "chat" and not args.path:
        parser.error("--path: a language model needs its directory")
    uvicorn.run(
        app(args.model, args.path, args.task), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
