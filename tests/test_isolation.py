"""Projects are kept apart: a matrix over every route of the app, on SQLite and PostgreSQL.

``ROUTES`` classifies every route of the running app (the API, the console and
the files it serves): ``public`` needs no token, ``member`` serves the same
thing to every member (the catalog, the sites), ``scoped`` serves or changes
one project's things, ``operator`` is refused to members. A route that is not
in ``ROUTES`` fails the suite, so a new endpoint cannot ship without a check.

Every ``scoped`` and ``operator`` route has probes: Ada (member of ``alpha``)
asks for, or tries to change, the things of project ``zeta`` (Zed's): its
running and finished jobs, their logs, its quantum results, its restricted
dataset's files, its access requests, usage, site accounts, tokens and
sessions. A ``refused`` probe must be answered 403, 404 or 422 and, where it
reads, must work for Zed (so the probe hits something real); a ``filtered``
probe must answer without a trace of ``zeta`` where Zed's answer shows it.
After the changing probes, zeta's things are as they were.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from grappe.api.openai import TASKS, OpenAIEdge
from grappe.console.web import SESSION_COOKIE, csrf_for
from grappe.gateway.engine import EMBEDDING_MODEL as EMBEDDER
from tests.conftest import World, local_site, missing, open_world
from tests.test_quantum_e2e import BELL, quantum_site
from tests.tiny_lm import build_tiny_lm

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


def zeta_not_charged(z: Zeta) -> None:
    assert zeta_tokens(z) == z.extra["zeta_tokens"], "ada's call was charged to zeta"


def zeta_key_works(z: Zeta) -> None:
    (key,) = [k for k in z.api(z.zed).get("/api/v1/keys").json() if k["id"] == z.key_id]
    assert key["revoked_at"] is None
    resp = keyed("GET", "/v1/models")(z, z.zed)
    assert resp.status_code == 200, resp.text


def still(job: str, state: str) -> Callable[[Zeta], None]:
    def check(z: Zeta) -> None:
        assert z.job_state(getattr(z, job)) == state

    return check


def zeta_jobs_unchanged(z: Zeta) -> None:
    listed = z.api(z.zed).get("/api/v1/jobs", params={"project": "zeta"}).json()
    assert sorted(j["id"] for j in listed) == sorted([z.done, z.waiting, z.quantum])


def request_still_granted(z: Zeta) -> None:
    states = {r["id"]: r["state"] for r in z.api(z.zed).get("/api/v1/data/requests").json()}
    assert states[z.request] == "granted"


def zeta_members_unchanged(z: Zeta) -> None:
    members = z.world.client().get("/api/v1/projects/zeta").json()["members"]
    assert "zed" in members and "ada" not in members


SPEC = {"name": "zeta-sneak", "project": "zeta", "run": "echo hi", "max_runtime": "1m"}
YAML_SPEC = "name: zeta-sneak\nproject: zeta\nrun: echo hi\nmax_runtime: 1m\n"
TASK = {"program": BELL, "shots": 100, "project": "zeta", "backend": "aer"}
FILE = "/api/v1/datasets/energy/grid-load/files/load.csv"

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
V1_CALLS = [
    ("GET /v1/models", "GET", "/v1/models", None),
    ("POST /v1/chat/completions", "POST", "/v1/chat/completions", CHAT),
    (
        "POST /v1/completions",
        "POST",
        "/v1/completions",
        {"model": "tiny", "prompt": "the factory", "max_tokens": 3},
    ),
    ("POST /v1/embeddings", "POST", "/v1/embeddings", {"model": EMBEDDER, "input": "hello"}),
]

PROBES: list[Probe] = [
    # --- jobs
    Probe(
        "POST /api/v1/jobs",
        "submit to zeta",
        api("POST", "/api/v1/jobs", json=SPEC),
        owner_ok=False,
        unchanged=zeta_jobs_unchanged,
    ),
    Probe("POST /api/v1/jobs/plan", "plan for zeta", api("POST", "/api/v1/jobs/plan", json=SPEC)),
    Probe("GET /api/v1/jobs", "list zeta's jobs", api("GET", "/api/v1/jobs?project=zeta")),
    Probe("GET /api/v1/jobs", "list all jobs", api("GET", "/api/v1/jobs"), "filtered"),
    Probe(
        "GET /api/v1/jobs",
        "list waiting jobs",
        api("GET", "/api/v1/jobs?state=PENDING&state=SUCCEEDED&limit=1000"),
        "filtered",
    ),
    Probe("GET /api/v1/jobs/{job_id}", "show finished", api("GET", "/api/v1/jobs/{done}")),
    Probe("GET /api/v1/jobs/{job_id}", "show waiting", api("GET", "/api/v1/jobs/{waiting}")),
    Probe("GET /api/v1/jobs/{job_id}", "show quantum", api("GET", "/api/v1/jobs/{quantum}")),
    Probe(
        "POST /api/v1/jobs/{job_id}/cancel",
        "cancel waiting",
        api("POST", "/api/v1/jobs/{waiting}/cancel"),
        owner_ok=False,
        unchanged=still("waiting", "PENDING"),
    ),
    Probe(
        "POST /api/v1/jobs/{job_id}/cancel",
        "cancel finished",
        api("POST", "/api/v1/jobs/{done}/cancel"),
        owner_ok=False,
        unchanged=still("done", "SUCCEEDED"),
    ),
    Probe("GET /api/v1/jobs/{job_id}/logs", "logs", api("GET", "/api/v1/jobs/{done}/logs")),
    Probe(
        "GET /api/v1/jobs/{job_id}/logs",
        "logs from an offset",
        api("GET", "/api/v1/jobs/{done}/logs?offset=2&attempt=1"),
    ),
    Probe(
        "GET /api/v1/jobs/{job_id}/logs",
        "follow logs",
        api("GET", "/api/v1/jobs/{done}/logs?follow=true"),
    ),
    # --- projects, usage, tokens, accounts
    Probe("GET /api/v1/projects", "list projects", api("GET", "/api/v1/projects"), "filtered"),
    Probe("GET /api/v1/projects/{name}", "show zeta", api("GET", "/api/v1/projects/zeta")),
    Probe("GET /api/v1/usage", "zeta's usage", api("GET", "/api/v1/usage?project=zeta")),
    Probe("GET /api/v1/usage", "all usage", api("GET", "/api/v1/usage"), "filtered"),
    Probe(
        "POST /api/v1/tokens",
        "a token for zed",
        api("POST", "/api/v1/tokens", json={"user": "zed"}),
        owner_ok=False,
    ),
    Probe(
        "GET /api/v1/site-accounts",
        "site accounts",
        api("GET", "/api/v1/site-accounts"),
        "filtered",
    ),
    Probe(
        "DELETE /api/v1/site-accounts/{site}",
        "remove zed's account",
        api("DELETE", "/api/v1/site-accounts/emulators"),
        owner_ok=False,
        unchanged=lambda z: (
            None
            if MARK in z.api(z.zed).get("/api/v1/site-accounts").text
            else pytest.fail("zed's site account was removed")
        ),
    ),
    # --- datasets
    Probe(
        "GET /api/v1/datasets/{sector}/{name}",
        "who may read",
        api("GET", "/api/v1/datasets/energy/grid-load"),
        "filtered",
    ),
    Probe(
        "GET /api/v1/datasets/{sector}/{name}/files/{filename}",
        "download through zeta",
        api("GET", FILE + "?project=zeta"),
    ),
    Probe(
        "GET /api/v1/datasets/{sector}/{name}/files/{filename}",
        "download",
        api("GET", FILE),
    ),
    Probe(
        "GET /api/v1/datasets/{sector}/{name}/files/{filename}",
        "download version 1",
        api("GET", FILE + "?version=1"),
    ),
    Probe(
        "POST /api/v1/datasets/{sector}/{name}/requests",
        "request for zeta",
        api(
            "POST",
            "/api/v1/datasets/energy/grid-load/requests",
            json={"project": "zeta", "purpose": "a forecast of the grid load"},
        ),
        owner_ok=False,
    ),
    Probe(
        "GET /api/v1/data/requests",
        "access requests",
        api("GET", "/api/v1/data/requests"),
        "filtered",
    ),
    Probe(
        "GET /api/v1/data/requests",
        "zeta's requests",
        api("GET", "/api/v1/data/requests?dataset=energy/grid-load&state=granted"),
        "filtered",
    ),
    # --- quantum
    Probe(
        "POST /api/v1/quantum/tasks",
        "task for zeta",
        api("POST", "/api/v1/quantum/tasks", json=TASK),
        owner_ok=False,
        unchanged=zeta_jobs_unchanged,
    ),
    Probe(
        "GET /api/v1/quantum/tasks/{job_id}",
        "quantum result",
        api("GET", "/api/v1/quantum/tasks/{quantum}"),
    ),
    Probe(
        "GET /api/v1/quantum/tasks/{job_id}",
        "quantum result download",
        api("GET", "/api/v1/quantum/tasks/{quantum}?download=true"),
    ),
    Probe(
        "GET /api/v1/quantum/sessions",
        "sessions",
        api("GET", "/api/v1/quantum/sessions"),
        "filtered",
    ),
    Probe(
        "POST /api/v1/quantum/sessions",
        "reserve for zeta",
        api(
            "POST",
            "/api/v1/quantum/sessions",
            json={"project": "zeta", "backend": "aer", "minutes": 30},
        ),
        owner_ok=False,
    ),
    # --- API keys: zeta's are neither shown, made nor revoked by ada
    Probe("GET /api/v1/keys", "keys", api("GET", "/api/v1/keys"), "filtered"),
    Probe(
        "POST /api/v1/keys",
        "a key for zeta",
        api("POST", "/api/v1/keys", json={"project": "zeta", "name": "ada-spends"}),
        owner_ok=False,
    ),
    Probe(
        "DELETE /api/v1/keys/{key_id}",
        "revoke zeta's key",
        api("DELETE", "/api/v1/keys/{key_id}"),
        owner_ok=False,
        unchanged=zeta_key_works,
    ),
    # --- /v1 takes project keys: a member token is refused; alpha's key never charges zeta
    *[
        probe
        for route, method, path, body in V1_CALLS
        for probe in (
            Probe(
                route,
                "a member token",
                api(method, path, json=body),
                refusal=(401,),
                owner_ok=False,
            ),
            Probe(
                route,
                "alpha's key",
                keyed(method, path, json=body),
                "own",
                unchanged=zeta_not_charged,
            ),
        )
    ],
    # --- the console, signed in with a cookie
    Probe("GET /", "overview", page("GET", "/"), "filtered"),
    Probe("GET /overview/queue", "queue", page("GET", "/overview/queue"), "filtered"),
    Probe("GET /jobs", "job list", page("GET", "/jobs"), "filtered"),
    Probe("GET /jobs", "zeta's job list", page("GET", "/jobs?project=zeta")),
    Probe("GET /jobs/rows", "job rows", page("GET", "/jobs/rows"), "filtered"),
    Probe("GET /jobs/rows", "zeta's job rows", page("GET", "/jobs/rows?project=zeta")),
    Probe(
        "POST /jobs/new",
        "submit to zeta",
        page("POST", "/jobs/new", {"spec": YAML_SPEC}),
        owner_ok=False,
        unchanged=zeta_jobs_unchanged,
    ),
    Probe("GET /jobs/{job_id}", "job page", page("GET", "/jobs/{done}")),
    Probe("GET /jobs/{job_id}", "waiting job page", page("GET", "/jobs/{waiting}")),
    Probe(
        "POST /jobs/{job_id}/cancel",
        "cancel",
        page("POST", "/jobs/{waiting}/cancel"),
        owner_ok=False,
        unchanged=still("waiting", "PENDING"),
    ),
    Probe("GET /jobs/{job_id}/events", "live events", page("GET", "/jobs/{done}/events")),
    Probe(
        "POST /plan",
        "plan for zeta",
        page("POST", "/plan", {"spec": YAML_SPEC, "against": "live"}),
        # Zed's plan page shows a ranking: no error page to compare with; Ada's must refuse.
        owner_ok=False,
    ),
    Probe("GET /data/requests", "access requests page", page("GET", "/data/requests"), "filtered"),
    Probe(
        "GET /data/{sector}/{name}",
        "dataset page",
        page("GET", "/data/energy/grid-load"),
        "filtered",
    ),
    Probe(
        "POST /data/{sector}/{name}/request",
        "request for zeta",
        page(
            "POST",
            "/data/energy/grid-load/request",
            {"project": "zeta", "purpose": "a forecast of the grid load"},
        ),
        owner_ok=False,
    ),
    Probe(
        "GET /data/{sector}/{name}/files/{filename}",
        "download",
        page("GET", "/data/energy/grid-load/files/load.csv"),
    ),
    Probe(
        "GET /data/{sector}/{name}/files/{filename}",
        "download through zeta",
        page("GET", "/data/energy/grid-load/files/load.csv?project=zeta&version=1"),
    ),
    Probe("GET /quantum", "quantum page", page("GET", "/quantum"), "filtered"),
    Probe("GET /quantum/rows", "quantum rows", page("GET", "/quantum/rows"), "filtered"),
    Probe(
        "POST /quantum",
        "task for zeta",
        page("POST", "/quantum", {"program": BELL, "shots": "100", "project": "zeta"}),
        owner_ok=False,
        unchanged=zeta_jobs_unchanged,
    ),
    Probe("GET /quantum/tasks/{job_id}", "task page", page("GET", "/quantum/tasks/{quantum}")),
    Probe(
        "GET /quantum/tasks/{job_id}/panel",
        "task panel",
        page("GET", "/quantum/tasks/{quantum}/panel"),
    ),
    Probe(
        "GET /quantum/tasks/{job_id}/result.json",
        "task result",
        page("GET", "/quantum/tasks/{quantum}/result.json"),
    ),
    Probe("GET /models", "models page and keys", page("GET", "/models"), "filtered"),
    Probe(
        "POST /models/keys",
        "a key for zeta",
        page("POST", "/models/keys", {"project": "zeta", "name": "ada-spends"}),
        owner_ok=False,
    ),
    Probe(
        "POST /models/keys/{key_id}/revoke",
        "revoke zeta's key",
        page("POST", "/models/keys/{key_id}/revoke"),
        owner_ok=False,
        unchanged=zeta_key_works,
    ),
]

# Operator routes: what a member tries; each must be 403 and change nothing.
OPERATOR_CALLS: dict[str, Call] = {
    "POST /api/v1/projects": api("POST", "/api/v1/projects", json={"name": "mine", "gpu_hours": 9}),
    "POST /api/v1/projects/{name}/allocations": api(
        "POST", "/api/v1/projects/zeta/allocations", json={"gpu_hours": 0}
    ),
    "POST /api/v1/projects/{name}/members": api(
        "POST", "/api/v1/projects/zeta/members", json={"user": "ada"}
    ),
    "POST /api/v1/users": api("POST", "/api/v1/users", json={"name": "eve", "project": "zeta"}),
    "POST /api/v1/datasets": api(
        "POST",
        "/api/v1/datasets",
        json={"id": "energy/fake", "title": "Fake", "licence": "CC0-1.0"},
    ),
    "PUT /api/v1/datasets/{sector}/{name}/versions/{version}/files/{filename}": api(
        "PUT", "/api/v1/datasets/energy/grid-load/versions/1/files/load.csv", content=b"x,y\n"
    ),
    "POST /api/v1/data/requests/{request_id}/grant": api(
        "POST", "/api/v1/data/requests/{request}/grant", json={}
    ),
    "POST /api/v1/data/requests/{request_id}/refuse": api(
        "POST", "/api/v1/data/requests/{request}/refuse", json={"reason": "no"}
    ),
    "POST /api/v1/data/requests/{request_id}/revoke": api(
        "POST", "/api/v1/data/requests/{request}/revoke", json={"reason": "no"}
    ),
    "POST /api/v1/quantum/allocations": api(
        "POST", "/api/v1/quantum/allocations", json={"project": "zeta", "shots": 0}
    ),
    "GET /api/v1/audit": api("GET", "/api/v1/audit?action=data."),
    "GET /operator": page("GET", "/operator"),
    "POST /operator/projects/{name}/allocate": page(
        "POST",
        "/operator/projects/zeta/allocate",
        {"gpu_hours": "0", "cpu_hours": "0", "days": "1"},
    ),
    "GET /operator/usage": page("GET", "/operator/usage"),
    "GET /operator/usage.csv": page("GET", "/operator/usage.csv"),
    "POST /operator/quantum/allocate": page(
        "POST", "/operator/quantum/allocate", {"project": "alpha", "shots": "100000"}
    ),
    "GET /data/queue": page("GET", "/data/queue"),
    "POST /data/queue/{request_id}/{decision}": page("POST", "/data/queue/{request}/revoke"),
    "POST /api/v1/models/deployments": api(
        "POST",
        "/api/v1/models/deployments",
        json={"model": "ada-model", "url": "http://127.0.0.1:9/v1"},
    ),
    "DELETE /api/v1/models/replicas/{replica_id}": api(
        "DELETE", "/api/v1/models/replicas/{replica}"
    ),
    "POST /api/v1/models/serve": api(
        "POST",
        "/api/v1/models/serve",
        json={"model": EMBEDDER, "site": "local", "task": "embedding"},
    ),
    "PUT /api/v1/models/policies/{project}": api(
        "PUT", "/api/v1/models/policies/zeta", json={"tokens": 0}
    ),
}


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


# ------------------------------------------------------------------ the world of two projects


def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Any
) -> tuple[Path, str]:
    """A folder and a store URL for a module's world: SQLite, or a new PostgreSQL database."""
    tmp: Path = tmp_path_factory.mktemp(f"{request.module.__name__}-{request.param}")
    if request.param == "sqlite":
        return tmp, f"sqlite:///{tmp / 'grappe.db'}"
    if postgres is None:
        missing("PostgreSQL could not be started")
    return tmp, postgres.create_database()


def _wait(z: Zeta, job_id: int, states: set[str]) -> None:
    deadline = time.monotonic() + 60
    while z.job_state(job_id) not in states:
        z.world.tick()
        assert time.monotonic() < deadline, f"job {job_id} is stuck"
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def zeta(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Any
) -> Iterator[Zeta]:
    tmp, url = module_store(request, tmp_path_factory, postgres)
    try:
        import qiskit_aer  # noqa: F401
    except ImportError:
        missing("qiskit-aer is not installed (pip install -e '.[quantum]')")
    world = open_world(tmp, url, sites=[local_site(), quantum_site()], seed_datasets=False)
    admin = world.client()
    for name in ("alpha", "zeta"):
        resp = admin.post("/api/v1/projects", json={"name": name, "gpu_hours": 1, "cpu_hours": 5})
        assert resp.status_code == 201, resp.text
    ada, zed = world.user("ada", "alpha"), world.user("zed", "zeta")
    z = Zeta(world, ada, zed)
    zc = z.api(zed)
    account = zc.post("/api/v1/site-accounts", json={"site": "emulators", "user": "zeta-user"})
    assert account.status_code == 201, account.text
    run = {**SPEC, "name": "zeta-secret-run", "run": "echo ZETA-LOG-LINE"}
    z.done = zc.post("/api/v1/jobs", json=run).json()["id"]
    _wait(z, z.done, {"SUCCEEDED"})
    admin.post("/api/v1/quantum/allocations", json={"project": "zeta", "shots": 10_000})
    task = zc.post("/api/v1/quantum/tasks", json={**TASK, "name": "zeta-bell"})
    assert task.status_code == 201, task.text
    z.quantum = task.json()["id"]
    _wait(z, z.quantum, {"SUCCEEDED"})
    z.waiting = zc.post("/api/v1/jobs", json={**SPEC, "name": "zeta-waiting"}).json()["id"]
    session = zc.post(
        "/api/v1/quantum/sessions", json={"project": "zeta", "backend": "aer", "minutes": 30}
    )
    assert session.status_code == 201, session.text
    dataset = {
        "id": "energy/grid-load",
        "title": "Grid load",
        "licence": "CC-BY-4.0",
        "sensitivity": "restricted",
        "allowed_sites": ["local"],
    }
    assert admin.post("/api/v1/datasets", json=dataset).status_code == 201
    put = admin.put(
        "/api/v1/datasets/energy/grid-load/versions/1/files/load.csv", content=b"hour,mw\n1,42\n"
    )
    assert put.status_code == 201, put.text
    asked = zc.post(
        "/api/v1/datasets/energy/grid-load/requests",
        json={"project": "zeta", "purpose": "zeta forecasts the grid load"},
    )
    assert asked.status_code == 201, asked.text
    z.request = asked.json()["id"]
    assert admin.post(f"/api/v1/data/requests/{z.request}/grant", json={}).status_code == 200
    tiny = build_tiny_lm(tmp / "tiny")
    deployed = admin.post("/api/v1/models/deployments", json={"model": "tiny", "path": str(tiny)})
    assert deployed.status_code == 201, deployed.text
    upstream = {"model": "upstream", "url": "http://127.0.0.1:9/v1"}
    replica = admin.post("/api/v1/models/deployments", json=upstream)
    assert replica.status_code == 201, replica.text
    z.replica = replica.json()["replica"]["id"]
    made = {
        t: z.api(t).post("/api/v1/keys", json={"project": p})
        for t, p in ((ada, "alpha"), (zed, "zeta"))
    }
    assert all(r.status_code == 201 for r in made.values()), [r.text for r in made.values()]
    z.key_id = made[zed].json()["id"]
    z.extra["keys"] = {t: r.json()["key"] for t, r in made.items()}
    spent = keyed("POST", "/v1/chat/completions", json=CHAT)(z, zed)
    assert spent.status_code == 200, spent.text
    assert zeta_tokens(z) > 0
    yield z
    world.factory.close()


# ------------------------------------------------------------------ the matrix


def test_every_route_is_classified(zeta: Zeta) -> None:
    present = route_keys(zeta.world.app)
    unclassified = sorted(present - set(ROUTES))
    assert not unclassified, (
        f"classify these routes in ROUTES (tests/test_isolation.py): {unclassified}"
    )
    gone = sorted(set(ROUTES) - present)
    assert not gone, f"ROUTES names routes the app no longer has: {gone}"


def test_every_scoped_and_operator_route_has_a_probe() -> None:
    probed = {p.route for p in PROBES} | set(OPERATOR_CALLS)
    unprobed = sorted(k for k, v in ROUTES.items() if v in (SCOPED, OPERATOR) and k not in probed)
    assert not unprobed, f"add probes for: {unprobed}"
    for p in PROBES:
        assert ROUTES[p.route] == SCOPED, p.route
    for key in OPERATOR_CALLS:
        assert ROUTES[key] == OPERATOR, key


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: f"{p.route} [{p.label}]")
def test_a_member_of_alpha_cannot_reach_zeta(zeta: Zeta, probe: Probe) -> None:
    theirs = probe.call(zeta, zeta.ada)
    if probe.kind in ("filtered", "own"):
        assert theirs.status_code == 200, theirs.text
        assert MARK not in theirs.text.lower(), f"{probe.label} shows zeta's things to ada"
    else:
        assert theirs.status_code in probe.refusal, (theirs.status_code, theirs.text[:300])
        assert "ZETA-LOG-LINE" not in theirs.text and "zeta-secret-run" not in theirs.text
        if probe.route.split(" ", 1)[1].startswith(("/api/", "/v1/")):
            assert theirs.json()["error"]["message"]
    if probe.unchanged is not None:
        probe.unchanged(zeta)
    if probe.owner_ok:
        own = probe.call(zeta, zeta.zed)
        assert own.status_code == 200, (own.status_code, own.text[:300])
        if probe.kind == "filtered":
            assert MARK in own.text.lower(), f"the probe {probe.label} does not reach zeta's things"


@pytest.mark.parametrize("key", sorted(OPERATOR_CALLS))
def test_a_member_cannot_do_operator_work(zeta: Zeta, key: str) -> None:
    before = zeta.world.client().get("/api/v1/projects/zeta").json()
    resp = OPERATOR_CALLS[key](zeta, zeta.ada)
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    after = zeta.world.client().get("/api/v1/projects/zeta").json()
    assert before == after
    zeta_members_unchanged(zeta)
    request_still_granted(zeta)


@pytest.mark.parametrize("key", sorted(k for k, v in ROUTES.items() if v != PUBLIC))
def test_every_route_but_the_public_ones_needs_a_member(zeta: Zeta, key: str) -> None:
    method, path = key.split(" ", 1)
    url = (
        path.replace("{job_id}", str(zeta.done))
        .replace("{name}", "zeta")
        .replace("{site}", "emulators")
        .replace("{sector}", "energy")
        .replace("{request_id}", str(zeta.request))
        .replace("{version}", "1")
        .replace("{filename}", "load.csv")
        .replace("{language}", "fr")
        .replace("{key_id}", str(zeta.key_id))
        .replace("{replica_id}", str(zeta.replica))
        .replace("{project}", "zeta")
        .replace("{decision}", "grant")
    )
    resp = zeta.world.http.request(method, url, follow_redirects=False)
    if path.startswith("/api/"):
        assert resp.status_code == 401, (key, resp.status_code, resp.text[:200])
    else:  # the console sends the visitor to sign in
        assert resp.status_code in (303, 401, 403), (key, resp.status_code)
        if resp.status_code == 303:
            assert resp.headers["location"].startswith("/signin")
    assert MARK not in resp.text.lower()
