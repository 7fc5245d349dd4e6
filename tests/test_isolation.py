"""Projects are kept apart: a matrix over every route of the app, on SQLite and PostgreSQL.

``ROUTES`` classifies every route of the running app (the API, the console and
the files it serves): ``public`` needs no token, ``member`` serves the same
thing to every member (the catalog, the sites), ``scoped`` serves or changes
one project's things, ``operator`` is refused to members. A route that is not
in ``ROUTES`` fails the suite, so a new endpoint cannot ship without a check.
The table is in ``tests/isolation_routes.py``, the probes in ``tests/isolation_probes.py``.

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
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import local_site, missing, module_store, open_world
from tests.isolation_probes import (
    CHAT,
    OPERATOR_CALLS,
    PROBES,
    SPEC,
    TASK,
    request_still_granted,
    zeta_members_unchanged,
)
from tests.isolation_routes import (
    MARK,
    OPERATOR,
    PUBLIC,
    ROUTES,
    SCOPED,
    Probe,
    Zeta,
    keyed,
    route_keys,
    zeta_tokens,
)
from tests.test_quantum_e2e import quantum_site
from tests.tiny_lm import build_tiny_lm

# ------------------------------------------------------------------ the world of two projects


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
        f"classify these routes in ROUTES (tests/isolation_routes.py): {unclassified}"
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
