"""The HTTP API on SQLite and PostgreSQL: auth, roles, isolation, validation, cancel."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from grappe.store.tables import TokenRow
from tests.conftest import World

HELLO = {"name": "hello", "project": "demo", "run": "echo hi", "max_runtime": "1m"}


def test_health_and_openapi_need_no_token(world: World) -> None:
    health = world.http.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["sites"] == ["local"]
    doc = world.http.get("/api/v1/openapi.json").json()
    assert "/api/v1/jobs" in doc["paths"] and "/api/v1/jobs/{job_id}/logs" in doc["paths"]


def test_requests_without_a_valid_token_get_401_json(world: World) -> None:
    anonymous = world.http.get("/api/v1/jobs")
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.json()["error"]["message"]
    wrong = world.client("grp_not-a-token").get("/api/v1/jobs")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"


def test_tokens_are_stored_hashed(world: World) -> None:
    token = world.user("ada")
    with world.factory.store.session() as s:
        hashes = set(s.scalars(select(TokenRow.token_hash)))
    assert token not in hashes
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert world.client(token).get("/api/v1/whoami").json()["name"] == "ada"


def test_submit_is_idempotent_on_the_request_id(world: World) -> None:
    admin = world.client()
    headers = {"Idempotency-Key": "4a1f-retry"}
    first = admin.post("/api/v1/jobs", json=HELLO, headers=headers)
    again = admin.post("/api/v1/jobs", json=HELLO, headers=headers)
    other = admin.post("/api/v1/jobs", json=HELLO, headers={"Idempotency-Key": "another"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert len(admin.get("/api/v1/jobs").json()) == 2


def test_invalid_spec_gets_422_naming_field_value_and_fix(world: World) -> None:
    bad = {**HELLO, "resources": {"gpus": "X1:2", "cpus": 0}, "colour": "red"}
    resp = world.client().post("/api/v1/jobs", json=bad)
    assert resp.status_code == 422
    problems = {p["field"]: p for p in resp.json()["error"]["problems"]}
    assert problems["resources.gpus.model"]["value"] == "X1"
    assert "use one of" in problems["resources.gpus.model"]["message"]
    assert problems["resources.cpus"]["value"] == 0
    assert "remove it" in problems["colour"]["message"]


def test_unknown_project_and_impossible_job_are_422(world: World) -> None:
    admin = world.client()
    unknown = admin.post("/api/v1/jobs", json={**HELLO, "project": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["problems"][0] == {
        "field": "project",
        "value": "nope",
        "message": "no such project; `grappe projects` lists yours",
    }
    huge = admin.post("/api/v1/jobs", json={**HELLO, "resources": {"cpus": 999}})
    assert huge.status_code == 422
    body = huge.json()["error"]
    assert body["code"] == "unplaceable"
    assert "has 4 CPUs per node" in body["problems"][0]["message"]


def test_members_see_only_their_projects(world: World) -> None:
    admin = world.client()
    admin.post("/api/v1/projects", json={"name": "other", "gpu_hours": 1, "cpu_hours": 1})
    theirs = admin.post("/api/v1/jobs", json={**HELLO, "project": "other"}).json()
    ours = admin.post("/api/v1/jobs", json=HELLO).json()
    ada = world.client(world.user("ada"))
    listed = [j["id"] for j in ada.get("/api/v1/jobs").json()]
    assert listed == [ours["id"]]
    for path in (f"/api/v1/jobs/{theirs['id']}", f"/api/v1/jobs/{theirs['id']}/logs"):
        assert ada.get(path).status_code == 404
    assert ada.post(f"/api/v1/jobs/{theirs['id']}/cancel").status_code == 404
    assert ada.get("/api/v1/usage", params={"project": "other"}).status_code == 404
    assert [p["name"] for p in ada.get("/api/v1/projects").json()] == ["demo"]
    sneaky = ada.post("/api/v1/jobs", json={**HELLO, "project": "other"})
    assert sneaky.status_code == 422
    assert "not a member" in sneaky.json()["error"]["problems"][0]["message"]


def test_members_cannot_do_operator_work(world: World) -> None:
    ada = world.client(world.user("ada"))
    for path, body in (
        ("/api/v1/projects", {"name": "mine", "gpu_hours": 100}),
        ("/api/v1/projects/demo/allocations", {"gpu_hours": 1000}),
        ("/api/v1/users", {"name": "eve", "role": "admin"}),
    ):
        resp = ada.post(path, json=body)
        assert resp.status_code == 403, path
        assert "operator" in resp.json()["error"]["message"]
    operator = world.client(world.user("olga", project=None, role="operator"))
    assert (
        operator.post("/api/v1/projects", json={"name": "lab", "gpu_hours": 5}).status_code == 201
    )
    assert operator.post("/api/v1/users", json={"name": "eve", "role": "admin"}).status_code == 403


def test_member_submits_to_their_only_project_by_default(world: World) -> None:
    ada = world.client(world.user("ada"))
    job = ada.post("/api/v1/jobs", json={"name": "x", "run": "true"})
    assert job.status_code == 201
    assert job.json()["project"] == "demo" and job.json()["owner"] == "ada"


def test_cancel_a_waiting_job_at_once_and_twice_is_409(world: World) -> None:
    admin = world.client()
    job = admin.post("/api/v1/jobs", json=HELLO).json()
    cancelled = admin.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["reason"] == "cancelled by admin"
    again = admin.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]
    world.tick()
    assert admin.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "CANCELLED"


def test_plan_explains_ranking_and_rejections_without_submitting(world: World) -> None:
    admin = world.client()
    plan = admin.post("/api/v1/jobs/plan", json={**HELLO, "resources": {"gpus": "H100:1"}}).json()
    assert plan["candidates"] == []
    assert plan["rejected"] == [
        {
            "site": "local",
            "pool": "default",
            "reason": "pool default has no GPUs; the job asks for 1",
        }
    ]
    ok = admin.post("/api/v1/jobs/plan", json=HELLO).json()
    assert ok["candidates"][0]["site"] == "local" and ok["candidates"][0]["can_start_now"]
    assert admin.get("/api/v1/jobs").json() == []


def test_sites_show_live_capacity(world: World) -> None:
    admin = world.client()
    admin.post("/api/v1/jobs", json={**HELLO, "run": "sleep 5", "resources": {"cpus": 3}})
    world.tick()
    pool = admin.get("/api/v1/sites").json()[0]["pools"][0]
    assert pool["total_cpus"] == 4 and pool["free_cpus"] == 1
    job = admin.get("/api/v1/jobs").json()[0]
    admin.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_oversized_bodies_are_refused_early(world: World) -> None:
    resp = world.client().post(
        "/api/v1/jobs",
        content=b"x" * (3 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "too_large"
