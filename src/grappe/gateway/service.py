"""The gateway's request path: key, limits, model, replica or in-process engine, charge.

One ``Gateway`` lives beside the API. It keeps in memory what every request needs
(keys recently seen, deployments, replicas' load and health, rate windows and the
tokens not yet written) and refreshes it from the store in a background loop that
also checks the replicas' health and writes the token ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
from starlette.responses import Response, StreamingResponse

from grappe.gateway import engine as eng
from grappe.gateway import local, proxy
from grappe.gateway.errors import GatewayError, bad_request, unavailable, unknown_model
from grappe.gateway.limits import Ledger, RateLimits
from grappe.gateway.proxy import ReplicaFailed, Upstream, Usage, estimate_tokens, read_usage, relay
from grappe.gateway.router import Replica, Router, allowed
from grappe.store import gateway as store_gw
from grappe.store.gateway import KeyInfo

log = logging.getLogger(__name__)

KEY_PREFIX = "grpk_"
KEY_CACHE_S = 2.0
MAX_ATTEMPTS = 3
PATHS = {
    "chat": "/v1/chat/completions",
    "completion": "/v1/completions",
    "embedding": "/v1/embeddings",
}


@dataclass(frozen=True)
class Deployment:
    """A model the gateway serves, and how: ``local`` (in-process) or ``replicas``."""

    model: str
    engine: str
    task: str  # chat (chat and completions) or embedding
    path: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Gateway:
    def __init__(self, factory: Any, health_interval_s: float = 2.0) -> None:
        self.factory = factory
        self.store = factory.store
        self.health_interval_s = health_interval_s
        self.router = Router()
        self.limits = RateLimits()
        self.ledger = Ledger(self.store)
        self.upstream = Upstream()
        self.embedder = eng.Embedder()
        self._lms: dict[str, eng.CausalLM] = {}
        self._keys: dict[str, tuple[KeyInfo | None, float]] = {}
        self.deployments: dict[str, Deployment] = {}
        self._task: asyncio.Task[None] | None = None
        site = factory.sites.get("local")
        self.local_jurisdiction = (
            site.jurisdiction if site else os.environ.get("GRAPPE_LOCAL_JURISDICTION", "EU")
        )
        self.reload()

    # ------------------------------------------------------------------ state

    def reload(self) -> None:
        """Read deployments and replicas from the store (after a change, and every loop)."""
        found: dict[str, Deployment] = {}
        if eng.embedding_available():
            found[eng.EMBEDDING_MODEL] = Deployment(eng.EMBEDDING_MODEL, "local", "embedding")
        replicas: list[Replica] = []
        with self.store.session() as s:
            by_id = {}
            for d in store_gw.deployments(s):
                found[d.model] = Deployment(d.model, d.engine, d.task, d.path)
                by_id[d.id] = d.model
            for r in store_gw.replicas(s):
                replicas.append(
                    Replica(
                        r.id,
                        by_id[r.deployment_id],
                        r.url,
                        r.upstream_model,
                        r.site,
                        r.jurisdiction,
                        r.job_id,
                        healthy=r.healthy,
                        last_error=r.last_error,
                    )
                )
        self.deployments = found
        self.router.sync(replicas)

    def forget_keys(self) -> None:
        self._keys.clear()

    def key(self, token: str | None) -> KeyInfo:
        """The API key's grant, read from the store at most every couple of seconds."""
        if not token:
            raise GatewayError(
                401,
                "no API key given; send 'Authorization: Bearer <key>' "
                "(create one with `grappe keys create --project P`)",
                "invalid_request_error",
                "invalid_api_key",
            )
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is None or cached[1] < now:
            with self.store.session() as s:
                info = store_gw.key_by_hash(s, digest)
            if len(self._keys) > 10_000:
                self._keys.clear()
            cached = (info, now + KEY_CACHE_S)
            self._keys[digest] = cached
        if cached[0] is None:
            raise GatewayError(
                401,
                "this API key is not valid (unknown or revoked); see `grappe keys ls`",
                "invalid_request_error",
                "invalid_api_key",
            )
        return cached[0]

    def models(self, key: KeyInfo) -> list[dict[str, Any]]:
        """The models this key's project can call now."""
        created = int(time.time())
        shown = []
        for d in sorted(self.deployments.values(), key=lambda d: d.model):
            if d.engine == "local":
                ok = allowed(self.local_jurisdiction, key.jurisdiction)
            else:
                ok = any(allowed(r.jurisdiction, key.jurisdiction) for r in self.router.of(d.model))
            if ok:
                shown.append(
                    {"id": d.model, "object": "model", "created": created, "owned_by": "grappe"}
                )
        return shown

    # ------------------------------------------------------------------ background

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await anyio.to_thread.run_sync(self.ledger.flush)
        await self.upstream.close()

    async def _loop(self) -> None:
        await anyio.to_thread.run_sync(proxy.load_tokenizer)
        while True:
            try:
                await anyio.to_thread.run_sync(self.reload)
                await self.check_health()
                await anyio.to_thread.run_sync(self.ledger.flush)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the gateway's background loop failed once; it goes on")
            await asyncio.sleep(self.health_interval_s)

    async def check_health(self) -> None:
        """Ask every replica for its models; a replica enters or leaves the rotation by it."""
        replicas = list(self.router.replicas.values())
        results = await asyncio.gather(*(self._probe(r) for r in replicas))
        changed = [(r, ok, why) for r, (ok, why) in zip(replicas, results, strict=True)]
        now = datetime.now(UTC)

        def save() -> None:
            with self.store.session() as s:
                for r, ok, why in changed:
                    store_gw.set_health(s, r.id, ok, why, now)

        for r, ok, why in changed:
            if ok != r.healthy:
                log.info("replica %s of %s is %s %s", r.url, r.model, "up" if ok else "down", why)
            r.healthy, r.last_error = ok, why
        await anyio.to_thread.run_sync(save)

    async def _probe(self, replica: Replica) -> tuple[bool, str]:
        try:
            async with self.upstream.session().get(
                replica.url + "/v1/models", timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return True, ""
                return False, f"health check answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, f"health check failed: {exc or type(exc).__name__}"

    # ------------------------------------------------------------------ requests

    async def handle(self, task: str, raw: bytes, key: KeyInfo) -> Response:
        """Serve one ``/v1`` request of ``task`` (chat, completion, embedding)."""
        self.ensure_started()
        body = _parse(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("model: give the model's name, as GET /v1/models lists it", "model")
        deployment = self.deployments.get(model)
        if deployment is None:
            raise unknown_model(model, [m["id"] for m in self.models(key)])
        if (task == "embedding") != (deployment.task == "embedding"):
            what = "an embedding model" if deployment.task == "embedding" else "a language model"
            raise bad_request(
                f"model {model!r} is {what}; it does not serve {PATHS[task]}", "model"
            )
        local.check_body(task, body)
        self.ledger.check_budget(key)
        self.limits.admit(key)
        if deployment.engine == "local":
            if not allowed(self.local_jurisdiction, key.jurisdiction):
                raise unavailable(
                    f"model {model!r} runs in jurisdiction {self.local_jurisdiction} and project "
                    f"{key.project!r} is restricted to {key.jurisdiction}"
                )
            return await local.serve(self, deployment, task, body, key)
        return await self._forward(deployment, task, raw, body, key)

    def language_model(self, path: str) -> eng.CausalLM:
        lm = self._lms.get(path)
        if lm is None:
            lm = self._lms[path] = eng.CausalLM(path)
        return lm

    def charge(self, key: KeyInfo, model: str, prompt: int, completion: int) -> None:
        self.ledger.charge(key.project_id, model, prompt, completion)
        self.limits.add_tokens(key, prompt + completion)

    async def _forward(
        self, d: Deployment, task: str, raw: bytes, body: dict[str, Any], key: KeyInfo
    ) -> Response:
        tried: set[int] = set()
        last = ""
        for _ in range(MAX_ATTEMPTS):
            replica = self.router.pick(d.model, key.jurisdiction, tried)
            if replica is None:
                break
            tried.add(replica.id)
            payload = raw
            if replica.upstream_model and replica.upstream_model != d.model:
                payload = json.dumps({**body, "model": replica.upstream_model}).encode()
            Router.begin(replica)
            try:
                resp, first, ttfb = await self.upstream.open(replica, PATHS[task], payload)
            except ReplicaFailed as exc:
                Router.end(replica, None, str(exc))
                last = str(exc)
                log.warning("replica %s failed, trying another: %s", replica.url, exc)
                continue
            if body.get("stream") and resp.status == 200:
                return self._stream(d, replica, resp, first, body, key)
            rest = await resp.read()
            resp.release()
            data = first + rest
            Router.end(replica, ttfb)
            if resp.status == 200:
                self._charge_answer(key, d.model, task, body, data)
            return Response(data, resp.status, media_type="application/json")
        where = f" in jurisdiction {key.jurisdiction}" if key.jurisdiction else ""
        reason = f"; last failure: {last}" if last else ""
        raise unavailable(f"no healthy replica of {d.model!r}{where} can serve now{reason}")

    def _stream(
        self, d: Deployment, replica: Replica, resp: Any, first: bytes, body: dict, key: KeyInfo
    ) -> StreamingResponse:
        started = time.perf_counter()

        def done(usage: Usage, error: str | None) -> None:
            prompt = usage.prompt if usage.reported else estimate_tokens(local.prompt_text(body))
            self.charge(key, d.model, prompt, usage.completion)

        return StreamingResponse(
            relay(resp, first, replica, started, done),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Grappe-Replica": str(replica.id)},
        )

    def _charge_answer(
        self, key: KeyInfo, model: str, task: str, body: dict[str, Any], data: bytes
    ) -> None:
        try:
            usage = read_usage(json.loads(data))
        except ValueError:
            usage = None
        if usage is None:
            usage = Usage(estimate_tokens(local.prompt_text(body)), 0)
        self.charge(key, model, usage.prompt, usage.completion)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"the request body is not JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body
