"""The route table of the isolation matrix, and how a probe calls a route as someone.

``ROUTES`` classifies every route of the running app (the API, the console and
the files it serves): ``public`` needs no token, ``member`` serves the same
thing to every member (the catalog, the sites), ``scoped`` serves or changes
one project's things, ``operator`` is refused to members. ``route_keys`` reads
the routes the app really answers; ``tests/test_isolation.py`` fails while the
two differ, so a new endpoint cannot ship without a class here (and, when
scoped or operator-only, a probe in ``tests/isolation_probes.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from grappe.api.openai import TASKS, OpenAIEdge
from grappe.console.web import SESSION_COOKIE, csrf_for
from tests.conftest import World

MARK = "zeta"  # every name of project B contains it; A's answers must not
PUBLIC, MEMBER, SCOPED, OPERATOR = "public", "member", "scoped", "operator"

# Every route of the app, by "METHOD path": a new route is added here with its class.
ROUTES: dict[str, str] = {
    # API documents and health
    "GET /api/v1/openapi.json": PUBLIC,
    "GET /api/v1/docs": PUBLIC,
    "GET /docs/oauth2-redirect": PUBLIC,
    "GET /api/v1/health": PUBLIC,
    "GET /api/v1/whoami": MEMBER,
    "GET /api/v1/sites": MEMBER,
    "GET /api/v1/gpus": MEMBER,
    # jobs
    "POST /api/v1/jobs": SCOPED,
    "POST /api/v1/jobs/plan": SCOPED,
    "GET /api/v1/jobs": SCOPED,
    "GET /api/v1/jobs/{job_id}": SCOPED,
    "POST /api/v1/jobs/{job_id}/cancel": SCOPED,
    "GET /api/v1/jobs/{job_id}/logs": SCOPED,
    "POST /api/v1/uploads": MEMBER,
    # projects, people, tokens, accounts
    "GET /api/v1/projects": SCOPED,
    "POST /api/v1/projects": OPERATOR,
    "GET /api/v1/projects/{name}": SCOPED,
    "POST /api/v1/projects/{name}/allocations": OPERATOR,
    "POST /api/v1/projects/{name}/members": OPERATOR,
    "GET /api/v1/usage": SCOPED,
    "POST /api/v1/users": OPERATOR,
    "GET /api/v1/audit": OPERATOR,
    "POST /api/v1/tokens": SCOPED,
    "GET /api/v1/site-accounts": SCOPED,
    "POST /api/v1/site-accounts": MEMBER,
    "DELETE /api/v1/site-accounts/{site}": SCOPED,
    # datasets
    "GET /api/v1/datasets": MEMBER,
    "POST /api/v1/datasets": OPERATOR,
    "GET /api/v1/datasets/{sector}/{name}": SCOPED,
    "GET /api/v1/datasets/{sector}/{name}/versions": MEMBER,
    "PUT /api/v1/datasets/{sector}/{name}/versions/{version}/files/{filename}": OPERATOR,
    "GET /api/v1/datasets/{sector}/{name}/files/{filename}": SCOPED,
    "POST /api/v1/datasets/{sector}/{name}/requests": SCOPED,
    "GET /api/v1/data/requests": SCOPED,
    "POST /api/v1/data/requests/{request_id}/grant": OPERATOR,
    "POST /api/v1/data/requests/{request_id}/refuse": OPERATOR,
    "POST /api/v1/data/requests/{request_id}/revoke": OPERATOR,
    # quantum
    "GET /api/v1/quantum/backends": MEMBER,
    "POST /api/v1/quantum/tasks": SCOPED,
    "GET /api/v1/quantum/tasks/{job_id}": SCOPED,
    "GET /api/v1/quantum/sessions": SCOPED,
    "POST /api/v1/quantum/sessions": SCOPED,
    "POST /api/v1/quantum/allocations": OPERATOR,
    # models as a service: keys, the catalog, deployments, and /v1 (called with a project's key)
    "POST /api/v1/keys": SCOPED,
    "GET /api/v1/keys": SCOPED,
    "DELETE /api/v1/keys/{key_id}": SCOPED,
    "GET /api/v1/models": MEMBER,
    "GET /api/v1/models/deployments": MEMBER,
    "POST /api/v1/models/deployments": OPERATOR,
    "DELETE /api/v1/models/replicas/{replica_id}": OPERATOR,
    "POST /api/v1/models/serve": OPERATOR,
    "PUT /api/v1/models/policies/{project}": OPERATOR,
    "GET /v1/models": SCOPED,
    "POST /v1/chat/completions": SCOPED,
    "POST /v1/completions": SCOPED,
    "POST /v1/embeddings": SCOPED,
    # the console
    "GET /signin": PUBLIC,
    "POST /signin": PUBLIC,
    "POST /signout": MEMBER,
    "GET /lang/{language}": PUBLIC,
    "GET /": SCOPED,
    "GET /overview/sites": MEMBER,
    "GET /overview/queue": SCOPED,
    "GET /jobs": SCOPED,
    "GET /jobs/rows": SCOPED,
    "GET /jobs/new": MEMBER,
    "POST /jobs/check": MEMBER,
    "POST /jobs/new": SCOPED,
    "GET /jobs/{job_id}": SCOPED,
    "POST /jobs/{job_id}/cancel": SCOPED,
    "GET /jobs/{job_id}/events": SCOPED,
    "GET /plan": MEMBER,
    "POST /plan": SCOPED,
    "GET /operator": OPERATOR,
    "POST /operator/projects/{name}/allocate": OPERATOR,
    "GET /operator/usage": OPERATOR,
    "GET /operator/usage.csv": OPERATOR,
    "POST /operator/quantum/allocate": OPERATOR,
    "GET /data": MEMBER,
    "GET /data/requests": SCOPED,
    "GET /data/queue": OPERATOR,
    "POST /data/queue/{request_id}/{decision}": OPERATOR,
    "GET /data/{sector}/{name}": SCOPED,
    "POST /data/{sector}/{name}/request": SCOPED,
    "GET /data/{sector}/{name}/files/{filename}": SCOPED,
    "GET /quantum": SCOPED,
    "GET /quantum/rows": SCOPED,
    "POST /quantum": SCOPED,
    "GET /quantum/tasks/{job_id}": SCOPED,
    "GET /quantum/tasks/{job_id}/panel": SCOPED,
    "GET /quantum/tasks/{job_id}/result.json": SCOPED,
    "GET /models": SCOPED,
    "POST /models/keys": SCOPED,
    "POST /models/keys/{key_id}/revoke": SCOPED,
    "MOUNT /static": PUBLIC,
}


@dataclass
class Zeta:
    """What project zeta holds, created once per store."""

    world: World
    ada: str  # member of alpha
    zed: str  # member of zeta
    done: int = 0  # a finished job with output
    waiting: int = 0  # a job waiting in the queue
    quantum: int = 0  # a finished quantum task
    request: int = 0  # zeta's granted access request
    key_id: int = 0  # zeta's API key
    replica: int = 0  # an upstream replica the operator registered
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, token: str) -> TestClient:
        return self.world.client(token)

    def console(self, token: str) -> TestClient:
        c = TestClient(self.world.app)
        c.cookies.set(SESSION_COOKIE, token)
        c.headers["Origin"] = "http://testserver"
        return c

    def job_state(self, job_id: int) -> str:
        return str(self.world.client().get(f"/api/v1/jobs/{job_id}").json()["state"])


Call = Callable[[Zeta, str], Any]  # (zeta, token) -> response


@dataclass(frozen=True)
class Probe:
    """Ada's attempt on zeta through one route; Zed's own call shows it reaches something."""

    route: str
    label: str
    call: Call
    kind: str = "refused"  # or "filtered", or "own" (answered for the caller's own project)
    refusal: tuple[int, ...] = (403, 404, 422)
    owner_ok: bool = True  # run it as Zed too (read-only probes)
    unchanged: Callable[[Zeta], None] | None = None


def api(method: str, path: str, **kw: Any) -> Call:
    def call(z: Zeta, token: str) -> Any:
        url = path.format(**vars(z))
        return z.api(token).request(method, url, **kw)

    return call


def page(method: str, path: str, form: dict[str, str] | None = None, **kw: Any) -> Call:
    def call(z: Zeta, token: str) -> Any:
        url = path.format(**vars(z))
        data = {"csrf": csrf_for(token), **(form or {})} if method == "POST" else None
        return z.console(token).request(method, url, data=data, follow_redirects=False, **kw)

    return call


def keyed(method: str, path: str, **kw: Any) -> Call:
    """A /v1 call with the API key of the caller's project; zeta's tokens are read first."""

    def call(z: Zeta, token: str) -> Any:
        z.extra["zeta_tokens"] = zeta_tokens(z)
        c = TestClient(z.world.app)
        c.headers["Authorization"] = f"Bearer {z.extra['keys'][token]}"
        return c.request(method, path, **kw)

    return call


def zeta_tokens(z: Zeta) -> int:
    z.world.app.state.gateway.ledger.flush()
    return int(z.world.client().get("/api/v1/projects/zeta").json()["used"]["tokens"])


def route_keys(app: Any) -> set[str]:
    """Every route the app answers, its included routers flattened, as ``METHOD path``.

    The OpenAI-compatible ``/v1`` is an ASGI layer in front of the routes: its endpoints count.
    """
    keys = set()
    for r in iter_route_contexts(app.routes):
        if isinstance(r.original_route, Mount):
            keys.add(f"MOUNT {r.path}")
        else:
            for method in sorted((r.methods or set()) - {"HEAD"}):
                keys.add(f"{method} {r.path.replace(':path}', '}')}")
    if any(m.cls is OpenAIEdge for m in app.user_middleware):  # /v1, answered before the routes
        keys |= {"GET /v1/models", *(f"POST {path}" for path in TASKS)}
    return keys
