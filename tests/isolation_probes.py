"""The probes of the isolation matrix: Ada (alpha) tries every scoped and operator route on zeta.

``PROBES`` holds, for each ``scoped`` route, what Ada asks for or tries to change
of project ``zeta`` (Zed's), and what must still hold afterwards; ``OPERATOR_CALLS``
holds, for each ``operator`` route, what a member tries. The tests that run them
are in ``tests/test_isolation.py``; the route classes in ``tests/isolation_routes.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from grappe.gateway.engine import EMBEDDING_MODEL as EMBEDDER
from tests.isolation_routes import MARK, Call, Probe, Zeta, api, keyed, page, zeta_tokens
from tests.test_quantum_e2e import BELL


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
