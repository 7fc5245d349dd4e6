"""Datasets on real Slurm sites: staged on the login node's side before sbatch, verified.

Sites: ``plain`` (this machine, no certification), ``hpc`` (Slurm reached
locally, HDS) and ``hpc-login`` (the same cluster through its login node over
SSH, as the member's own account, HDS).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import World, local_site, open_world
from tests.test_data_story import (
    COHORT,
    COHORT_SHA,
    HEALTH,
    READER,
    add_health,
    job,
    request_and_grant,
)

pytestmark = pytest.mark.integration

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


@pytest.fixture
def sworld(tmp_path: Path, slurm: Any, sshd: Any) -> Iterator[World]:
    login = slurm.site(
        "hpc-login",
        backend={
            "access": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "known_hosts": str(sshd.known_hosts),
        },
    )
    sites = [local_site("plain"), slurm.site("hpc"), login]
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sites)
    yield w
    for j in w.client().get("/api/v1/jobs", params={"state": ["PENDING", "RUNNING"]}).json():
        w.client().post(f"/api/v1/jobs/{j['id']}/cancel")
    w.factory.close()


def test_health_job_runs_on_the_hds_slurm_site_with_its_data_staged(sworld: World) -> None:
    add_health(sworld)
    alice = sworld.user("alice")
    request_and_grant(sworld, alice)
    spec = {**job(["health/cohort"]), "resources": {"cpus": 1, "memory": "64M"}}
    submitted = sworld.client(alice).post("/api/v1/jobs", json=spec)
    assert submitted.status_code == 201, submitted.text
    done = sworld.run_until(submitted.json()["id"], TERMINAL, timeout=120)
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert done["site"] == "hpc"
    rejected = {r["site"]: r["reason"] for r in done["placement"]["rejected"]}
    assert "only sites certified HDS" in rejected["plain"]
    out = sworld.client(alice).get(f"/api/v1/jobs/{done['id']}/logs").text
    assert COHORT.decode() in out and COHORT_SHA in out


def test_through_the_login_node_the_data_is_staged_as_the_members_account(
    sworld: World, sshd: Any
) -> None:
    add_health(sworld)
    user, key = sshd.user("grappe-t-dana")
    dana = sworld.user("dana")
    request_and_grant(sworld, dana)
    me = sworld.client(dana)
    registered = me.post(
        "/api/v1/site-accounts",
        json={"site": "hpc-login", "user": user, "private_key": key.read_text()},
    )
    assert registered.status_code == 201, registered.text
    run = READER + '; stat -c "%U" "$GRAPPE_INPUTS_DIR/health/cohort/cohort.csv"'
    spec = {**job(["health/cohort"], run), "constraints": {"sites": {"allow": ["hpc-login"]}}}
    done = sworld.run_until(me.post("/api/v1/jobs", json=spec).json()["id"], TERMINAL, 120)
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert done["site"] == "hpc-login"
    out = me.get(f"/api/v1/jobs/{done['id']}/logs").text
    assert COHORT_SHA in out and out.strip().endswith(user)


def test_a_damaged_copy_fails_the_slurm_job_before_sbatch(sworld: World, slurm: Any) -> None:
    add_health(sworld)
    alice = sworld.user("alice")
    request_and_grant(sworld, alice)
    stored = sworld.factory.settings.home / "datasets" / "health" / "cohort" / "1" / "cohort.csv"
    stored.write_bytes(COHORT + b"4,39,recovered\n")
    spec = {**job(["health/cohort"]), "constraints": {"sites": {"allow": ["hpc"]}}}
    before = slurm.command("squeue", "-h", "-o", "%i").stdout.split()
    done = sworld.run_until(
        sworld.client(alice).post("/api/v1/jobs", json=spec).json()["id"], TERMINAL, 60
    )
    assert done["state"] == "FAILED"
    assert "hpc refused the job" in done["reason"]
    assert "health/cohort version 1, file cohort.csv" in done["reason"]
    assert f"the catalog says {len(COHORT)}" in done["reason"]
    assert slurm.command("squeue", "-h", "-o", "%i").stdout.split() == before


@pytest.mark.parametrize("site", ["hpc", "hpc-login"])
def test_the_sites_own_copy_is_checked_there_and_read_in_place(
    tmp_path: Path, slurm: Any, sshd: Any, site: str, request: pytest.FixtureRequest
) -> None:
    # Outside pytest's own temporary tree, which other accounts may not enter.
    copies = Path(tempfile.mkdtemp(prefix="grappe-copies-"))
    request.addfinalizer(lambda: shutil.rmtree(copies, ignore_errors=True))
    (copies / "health" / "cohort" / "1").mkdir(parents=True)
    (copies / "health" / "cohort" / "1" / "cohort.csv").write_bytes(COHORT)
    for d in [copies, *copies.rglob("*")]:
        os.chmod(d, 0o755 if d.is_dir() else 0o644)
    login = slurm.site(
        "hpc-login",
        datasets_path=str(copies),
        backend={
            "access": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "known_hosts": str(sshd.known_hosts),
        },
    )
    sites = [slurm.site("hpc", datasets_path=str(copies)), login]
    w = open_world(tmp_path / "w", f"sqlite:///{tmp_path / 'g.db'}", sites)
    try:
        add_health(w, {**HEALTH, "residency": ["hpc", "hpc-login"]})
        user, key = sshd.user("grappe-t-erin")
        erin = w.user("erin")
        request_and_grant(w, erin)
        me = w.client(erin)
        me.post(
            "/api/v1/site-accounts",
            json={"site": "hpc-login", "user": user, "private_key": key.read_text()},
        )
        run = READER + '; readlink "$GRAPPE_INPUTS_DIR/health/cohort"'
        spec = {**job(["health/cohort"], run), "constraints": {"sites": {"allow": [site]}}}
        plan = me.post("/api/v1/jobs/plan", json=spec).json()
        assert plan["candidates"][0]["staging_s"] == 0
        done = w.run_until(me.post("/api/v1/jobs", json=spec).json()["id"], TERMINAL, 120)
        assert done["state"] == "SUCCEEDED", done["reason"]
        out = me.get(f"/api/v1/jobs/{done['id']}/logs").text
        assert COHORT_SHA in out and out.strip().endswith(str(copies / "health" / "cohort" / "1"))

        (copies / "health" / "cohort" / "1" / "cohort.csv").write_bytes(COHORT.upper())
        failed = w.run_until(me.post("/api/v1/jobs", json=spec).json()["id"], TERMINAL, 60)
        assert failed["state"] == "FAILED"
        assert "the site's copy in" in failed["reason"] and "checksum mismatch" in failed["reason"]
    finally:
        w.factory.close()
