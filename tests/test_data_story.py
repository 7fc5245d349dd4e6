"""Datasets end to end through the API, on SQLite and PostgreSQL, with real local sites.

A member finds a health dataset, asks for it, an operator grants it; the job
that reads it runs only on the HDS-certified site, with the file staged and
its SHA-256 verified. Refusals, expiry, revocation and damaged files behave.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from grappe.store import project_repo
from grappe.store.tables import DataAccessRow, utcnow
from tests.conftest import World, local_site, open_world

COHORT = b"patient,age,outcome\n1,54,recovered\n2,61,recovered\n3,47,readmitted\n"
COHORT_SHA = hashlib.sha256(COHORT).hexdigest()
HEALTH = {
    "id": "health/cohort",
    "title": "A small synthetic cohort",
    "description": "three patients, made up for tests",
    "publisher": "Test hospital",
    "licence": "CC-BY-4.0",
    "sensitivity": "health",
}
READER = (
    'cat "$GRAPPE_INPUT_HEALTH_COHORT/cohort.csv"; '
    'sha256sum "$GRAPPE_INPUTS_DIR/health/cohort/cohort.csv"'
)


@pytest.fixture
def hworld(tmp_path: Path, store_url: str) -> Iterator[World]:
    """Two sites on this machine: ``plain`` (no certification) and ``hds`` (HDS)."""
    w = open_world(
        tmp_path,
        store_url,
        sites=[local_site("plain"), local_site("hds", certifications=["HDS"])],
    )
    yield w
    w.factory.close()


def add_health(w: World, spec: dict | None = None, content: bytes = COHORT) -> None:
    admin = w.client()
    made = admin.post("/api/v1/datasets", json=spec or HEALTH)
    assert made.status_code == 201, made.text
    dataset = (spec or HEALTH)["id"]
    up = admin.put(f"/api/v1/datasets/{dataset}/versions/1/files/cohort.csv", content=content)
    assert up.status_code == 201, up.text
    assert up.json()["sha256"] == hashlib.sha256(content).hexdigest()


def job(inputs: list[str], run: str = READER) -> dict:
    return {"name": "reader", "project": "demo", "run": run, "inputs": inputs, "max_runtime": "1m"}


def request_and_grant(w: World, member: str, expires: str | None = None) -> int:
    asked = w.client(member).post(
        "/api/v1/datasets/health/cohort/requests",
        json={"project": "demo", "purpose": "readmission model for the cardiology ward"},
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["state"] == "pending"
    req = asked.json()["id"]
    granted = w.client().post(f"/api/v1/data/requests/{req}/grant", json={"expires": expires})
    assert granted.status_code == 200, granted.text
    assert granted.json()["state"] == "granted"
    return req


def test_member_finds_requests_is_granted_and_job_runs_on_hds_site(hworld: World) -> None:
    w = hworld
    add_health(w)
    alice = w.user("alice")
    me = w.client(alice)
    found = me.get("/api/v1/datasets", params={"search": "cohort"}).json()
    assert [d["id"] for d in found] == ["health/cohort"]
    assert found[0]["size"] == len(COHORT) and found[0]["latest_version"] == 1
    assert me.get("/api/v1/datasets", params={"sector": "energy"}).json() == []
    shown = me.get("/api/v1/datasets/health/cohort").json()
    assert shown["versions"][0]["files"] == [
        {"name": "cohort.csv", "size": len(COHORT), "sha256": COHORT_SHA}
    ]
    assert shown["access"]["readable"] is False

    # Before any grant: no download, no job.
    denied = me.get("/api/v1/datasets/health/cohort/files/cohort.csv")
    assert denied.status_code == 403
    assert "grappe data request health/cohort" in denied.json()["error"]["message"]
    refused_job = me.post("/api/v1/jobs", json=job(["health/cohort"]))
    assert refused_job.status_code == 422
    problem = refused_job.json()["error"]["problems"][0]
    assert problem["field"] == "inputs[0]" and "has no access" in problem["message"]

    req = request_and_grant(w, alice, expires="30d")
    pending = w.client().get("/api/v1/data/requests", params={"state": "pending"}).json()
    assert pending == []
    mine = me.get("/api/v1/data/requests").json()
    assert mine[0]["id"] == req and mine[0]["expires_at"] is not None

    got = me.get("/api/v1/datasets/health/cohort/files/cohort.csv")
    assert got.status_code == 200 and got.content == COHORT
    assert got.headers["X-SHA256"] == COHORT_SHA

    submitted = me.post("/api/v1/jobs", json=job(["health/cohort"]))
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["id"]
    job_id = submitted.json()["id"]
    done = w.run_until(job_id, {"SUCCEEDED", "FAILED"})
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert done["site"] == "hds"
    assert done["spec"]["inputs"] == ["health/cohort@1"]  # pinned at submission
    rejected = {r["site"]: r["reason"] for r in done["placement"]["rejected"]}
    assert "only sites certified HDS" in rejected["plain"]
    out = me.get(f"/api/v1/jobs/{job_id}/logs").text
    assert COHORT.decode() in out
    assert COHORT_SHA in out

    with w.factory.store.session() as s:
        actions = [(a.action, a.target) for a in project_repo.audit_log(s, 50)]
    assert ("data.request", "health/cohort") in actions
    assert ("data.grant", "health/cohort") in actions
    assert actions.count(("data.read", "health/cohort")) == 2  # the download, then the job


def test_refused_request_keeps_data_closed_and_says_why(hworld: World) -> None:
    w = hworld
    add_health(w)
    bob = w.client(w.user("bob"))
    req = bob.post(
        "/api/v1/datasets/health/cohort/requests",
        json={"project": "demo", "purpose": "curiosity about the cohort data"},
    ).json()["id"]
    assert bob.post(f"/api/v1/data/requests/{req}/grant", json={}).status_code == 403
    no_reason = w.client().post(f"/api/v1/data/requests/{req}/refuse", json={"reason": ""})
    assert no_reason.status_code == 422
    refused = w.client().post(
        f"/api/v1/data/requests/{req}/refuse", json={"reason": "no ethics approval"}
    )
    assert refused.json()["state"] == "refused"
    denied = bob.get("/api/v1/datasets/health/cohort/files/cohort.csv")
    assert denied.status_code == 403 and "no ethics approval" in denied.json()["error"]["message"]
    with w.factory.store.session() as s:
        assert "data.refuse" in [a.action for a in project_repo.audit_log(s, 20)]


def test_expiry_and_revocation_stop_reads_and_hold_queued_jobs(hworld: World) -> None:
    w = hworld
    add_health(w)
    carol = w.user("carol")
    me = w.client(carol)
    req = request_and_grant(w, carol)
    queued = me.post("/api/v1/jobs", json=job(["health/cohort"])).json()["id"]
    revoked = w.client().post(
        f"/api/v1/data/requests/{req}/revoke", json={"reason": "study closed"}
    )
    assert revoked.json()["state"] == "revoked"
    w.tick()
    waiting = me.get(f"/api/v1/jobs/{queued}").json()
    assert waiting["state"] == "PENDING"
    assert "revoked (study closed)" in waiting["reason"]
    assert me.get("/api/v1/datasets/health/cohort/files/cohort.csv").status_code == 403

    # A new grant that then expires: reads stop at the expiry.
    req2 = request_and_grant(w, carol, expires="1h")
    assert me.get("/api/v1/datasets/health/cohort/files/cohort.csv").status_code == 200
    with w.factory.store.session() as s:
        row = s.get(DataAccessRow, req2)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    late = me.get("/api/v1/datasets/health/cohort/files/cohort.csv")
    assert late.status_code == 403 and "expired" in late.json()["error"]["message"]
    assert me.get("/api/v1/data/requests").json()[0]["state"] == "expired"


def test_damaged_file_fails_the_job_before_it_starts(hworld: World) -> None:
    w = hworld
    add_health(w)
    alice = w.user("alice")
    request_and_grant(w, alice)
    stored = w.factory.settings.home / "datasets" / "health" / "cohort" / "1" / "cohort.csv"
    stored.write_bytes(COHORT.replace(b"54", b"45"))  # same size, other bytes
    submitted = w.client(alice).post("/api/v1/jobs", json=job(["health/cohort"], "touch ran"))
    done = w.run_until(submitted.json()["id"], {"SUCCEEDED", "FAILED"})
    assert done["state"] == "FAILED"
    assert "checksum mismatch" in done["reason"] and "health/cohort version 1" in done["reason"]
    assert not list((w.factory.settings.home / "sites").rglob("ran"))


def test_restricted_data_goes_only_to_listed_sites_and_plan_shows_staging(
    tmp_path: Path, store_url: str
) -> None:
    w = open_world(
        tmp_path,
        store_url,
        sites=[
            local_site("near", bandwidth="1MB/s"),
            local_site("far", bandwidth="1MB/s"),
            local_site("other"),
        ],
    )
    try:
        admin = w.client()
        spec = {
            "id": "energy/meters",
            "title": "Smart meter readings",
            "licence": "proprietary, shared under contract",
            "sensitivity": "restricted",
            "residency": ["near"],
            "allowed_sites": ["near", "far"],
        }
        assert admin.post("/api/v1/datasets", json=spec).status_code == 201
        body = b"x" * 3_000_000
        admin.put("/api/v1/datasets/energy/meters/versions/1/files/readings.bin", content=body)
        plan = admin.post("/api/v1/jobs/plan", json=job(["energy/meters"], "true")).json()
        assert plan["candidates"] == []
        assert all("project demo has no access" in r["reason"] for r in plan["rejected"])
        req = admin.post(
            "/api/v1/datasets/energy/meters/requests",
            json={"project": "demo", "purpose": "forecast the load of the district"},
        ).json()["id"]
        admin.post(f"/api/v1/data/requests/{req}/grant", json={})
        plan = admin.post("/api/v1/jobs/plan", json=job(["energy/meters"], "true")).json()
        by_site = {c["site"]: c for c in plan["candidates"]}
        assert set(by_site) == {"near", "far"}
        assert by_site["near"]["staging_s"] == 0
        assert by_site["far"]["staging_s"] == pytest.approx(3.0)  # 3 MB over 1 MB/s
        assert by_site["far"]["completion_s"] > by_site["near"]["completion_s"]
        rejected = {r["site"]: r["reason"] for r in plan["rejected"]}
        assert "restricted to the sites its publisher lists (near, far)" in rejected["other"]
    finally:
        w.factory.close()


def test_a_site_holding_a_copy_is_read_in_place_and_checked(tmp_path: Path, store_url: str) -> None:
    copies = tmp_path / "site-copies"
    w = open_world(tmp_path, store_url, sites=[local_site("near", datasets_path=str(copies))])
    try:
        add_health(w, {**HEALTH, "sensitivity": "open", "residency": ["near"]})
        (copies / "health" / "cohort" / "1").mkdir(parents=True)
        (copies / "health" / "cohort" / "1" / "cohort.csv").write_bytes(COHORT)
        run = READER + '; readlink "$GRAPPE_INPUTS_DIR/health/cohort"'
        first = w.client().post("/api/v1/jobs", json=job(["health/cohort"], run)).json()["id"]
        done = w.run_until(first, {"SUCCEEDED", "FAILED"})
        assert done["state"] == "SUCCEEDED", done["reason"]
        out = w.client().get(f"/api/v1/jobs/{first}/logs").text
        assert COHORT_SHA in out and out.strip().endswith(str(copies / "health" / "cohort" / "1"))

        (copies / "health" / "cohort" / "1" / "cohort.csv").write_bytes(COHORT.upper())
        second = w.client().post("/api/v1/jobs", json=job(["health/cohort"], run)).json()["id"]
        failed = w.run_until(second, {"SUCCEEDED", "FAILED"})
        assert failed["state"] == "FAILED"
        assert "the site's copy in" in failed["reason"] and "checksum mismatch" in failed["reason"]
    finally:
        w.factory.close()
