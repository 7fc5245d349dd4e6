"""A federation of real sites: this machine, a Slurm cluster (locally and through its login node)
and a Ray cluster. Placement, runs, logs, cancels, accounts and faults, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import World, local_site, open_world
from tests.fixtures_e2e import wait_for

pytestmark = pytest.mark.integration

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
ACTIVE = {"SUBMITTED", "RUNNING"}


def sites(slurm: Any, sshd: Any, ray_cluster: Any) -> list[dict[str, Any]]:
    hpc = slurm.site("hpc")
    for pool in hpc["pools"]:
        pool["price_eur_cpu_hour"] = 0.03
        pool["price_eur_gpu_hour"] = 1.5
    login = slurm.site(
        "hpc-login",
        backend={
            "access": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "known_hosts": str(sshd.known_hosts),
        },
    )
    rejecting = slurm.site("hpc-misconfigured", backend={"partitions": {"cpu": "nosuch"}})
    rejecting["pools"] = [p for p in rejecting["pools"] if p["name"] == "cpu"]
    local = local_site("local", cpus=2, memory="4G", pool={"price_eur_cpu_hour": 0.05})
    return [local, hpc, login, rejecting, ray_cluster.site("cloud")]


@pytest.fixture
def fed(tmp_path: Path, slurm: Any, sshd: Any, ray_cluster: Any) -> Iterator[World]:
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'fed.db'}", sites(slurm, sshd, ray_cluster))
    yield w
    for job in w.client().get("/api/v1/jobs", params={"state": ["PENDING", *ACTIVE]}).json():
        w.client().post(f"/api/v1/jobs/{job['id']}/cancel")
    w.factory.close()


def submit(world: World, token: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {"name": "fed", "project": "demo", "run": "true", "max_runtime": "10m", **spec}
    resp = world.client(token).post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def logs(world: World, job_id: int, token: str | None = None) -> str:
    return world.client(token).get(f"/api/v1/jobs/{job_id}/logs").text


def test_a_gpu_job_that_needs_hds_runs_on_the_slurm_site(fed: World) -> None:
    job = submit(
        fed,
        run="echo gpus=$CUDA_VISIBLE_DEVICES on $GRAPPE_SITE",
        resources={"gpus": "H100:2", "cpus": 2},
        constraints={"certifications": ["HDS"]},
    )
    done = fed.run_until(job["id"], TERMINAL, timeout=90)
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert (done["site"], done["pool"]) == ("hpc", "gpu")
    rejected = {r["site"]: r["reason"] for r in done["placement"]["rejected"]}
    assert "lacks certification HDS" in rejected["cloud"]
    assert "lacks certification HDS" in rejected["local"]
    out = logs(fed, job["id"])
    assert "on hpc" in out and len(out.split("gpus=")[1].split()[0].split(",")) == 2


def free_cpus(world: World, site: str) -> int:
    """The most free CPUs in one pool of ``site``, as the federation reports them."""
    found = {s["name"]: s for s in world.client().get("/api/v1/sites").json()}
    return max((p["free_cpus"] or 0 for p in found[site]["pools"]), default=0)


def test_a_cpu_job_for_the_lowest_cost_goes_where_it_is_cheapest(fed: World) -> None:
    # The Ray cluster is shared with other tests, and its report of their jobs lags by seconds.
    wait_for("a free CPU on cloud", lambda: free_cpus(fed, "cloud") >= 1, 60, every=0.5)
    job = submit(fed, run="echo cheap", objective="cost", resources={"cpus": 1})
    done = fed.run_until(job["id"], TERMINAL, timeout=120)
    assert done["state"] == "SUCCEEDED", done["reason"]
    ranked = [(c["site"], c["cost_eur"]) for c in done["placement"]["candidates"]]
    assert done["site"] == "cloud" == ranked[0][0], done["placement"]["candidates"]
    assert ranked[0][1] < min(cost for site, cost in ranked[1:] if site != "cloud")
    assert "cheap" in logs(fed, job["id"])


@pytest.mark.parametrize("site", ["hpc", "cloud"])
def test_cancel_stops_a_running_job_on_slurm_and_on_ray(fed: World, site: str) -> None:
    marker = f"grappe-fed-cancel-{site}-{os.getpid()}"
    job = submit(
        fed, run=f"echo started; sleep 300 # {marker}", constraints={"sites": {"allow": [site]}}
    )
    fed.run_until(job["id"], {"RUNNING"}, timeout=120)
    deadline = time.monotonic() + 60
    while "started" not in logs(fed, job["id"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    cancelled = fed.client().post(f"/api/v1/jobs/{job['id']}/cancel").json()
    if cancelled["state"] != "CANCELLED":
        cancelled = fed.run_until(job["id"], TERMINAL, timeout=60)
    assert cancelled["state"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"processes of job {job['id']} survive on {site}"
        time.sleep(0.5)


def test_a_member_submits_through_the_login_node_as_their_own_account(
    fed: World, sshd: Any
) -> None:
    user, key = sshd.user("grappe-t-ada")
    token = fed.user("ada")
    ada = fed.client(token)
    spec = {
        "name": "whoami",
        "project": "demo",
        "run": "id -un",
        "constraints": {"sites": {"allow": ["hpc-login"]}},
    }
    plan = ada.post("/api/v1/jobs/plan", json=spec).json()
    assert plan["candidates"] == []
    reasons = {r["site"]: r["reason"] for r in plan["rejected"]}
    assert "grappe accounts add hpc-login" in reasons["hpc-login"]
    registered = ada.post(
        "/api/v1/site-accounts",
        json={"site": "hpc-login", "user": user, "private_key": key.read_text()},
    )
    assert registered.status_code == 201, registered.text
    job = submit(fed, token, **{k: v for k, v in spec.items() if k != "name"}, name="whoami")
    done = fed.run_until(job["id"], TERMINAL, timeout=120)
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert done["site"] == "hpc-login"
    assert logs(fed, job["id"], token).strip() == user


def test_a_slurm_refusal_shows_slurms_own_message(fed: World) -> None:
    # The partitions allow one day (EnforcePartLimits=ALL): sbatch refuses two.
    job = submit(fed, run="true", max_runtime="2d", constraints={"sites": {"allow": ["hpc"]}})
    done = fed.run_until(job["id"], TERMINAL, timeout=60)
    assert done["state"] == "FAILED"
    assert "hpc refused the job" in done["reason"]
    assert "time limit" in done["reason"].lower()


def test_a_pool_whose_partition_does_not_exist_is_rejected_in_placement(fed: World) -> None:
    plan = (
        fed.client()
        .post(
            "/api/v1/jobs/plan",
            json={
                "name": "x",
                "project": "demo",
                "run": "true",
                "constraints": {"sites": {"allow": ["hpc-misconfigured"]}},
            },
        )
        .json()
    )
    assert plan["candidates"] == []
    assert {
        "site": "hpc-misconfigured",
        "pool": "cpu",
        "reason": "pool cpu reported no capacity",
    } in (plan["rejected"])


def test_the_slurm_controller_going_away_mid_run_loses_no_job(fed: World, slurm: Any) -> None:
    job = submit(
        fed, run="echo begin; sleep 6; echo end", constraints={"sites": {"allow": ["hpc"]}}
    )
    fed.run_until(job["id"], {"RUNNING"}, timeout=90)
    slurm.stop_ctld()
    try:
        fed.tick(2)
        site = next(s for s in fed.client().get("/api/v1/sites").json() if s["name"] == "hpc")
        assert not site["available"]
        assert fed.client().get(f"/api/v1/jobs/{job['id']}").json()["state"] == "RUNNING"
        time.sleep(7)  # the job ends while its controller is away
    finally:
        slurm.start_ctld()
    done = fed.run_until(job["id"], TERMINAL, timeout=120)
    assert done["state"] == "SUCCEEDED", done["reason"]
    assert logs(fed, job["id"]).split() == ["begin", "end"]


def test_jobs_a_silent_site_had_not_started_are_placed_elsewhere(
    tmp_path: Path, slurm: Any
) -> None:
    hpc = slurm.site("hpc")
    hpc["pools"] = [p for p in hpc["pools"] if p["name"] == "cpu"]
    hpc["pools"][0]["price_eur_cpu_hour"] = 0.01
    local = local_site("local", cpus=2, memory="4G", pool={"price_eur_cpu_hour": 0.05})
    w = open_world(
        tmp_path, f"sqlite:///{tmp_path / 'q.db'}", [local, hpc], site_down_requeue_s=1.0
    )
    # Slurm accepts the job but cannot start it: its partition is down.
    slurm.command("scontrol", "update", "PartitionName=cpu", "State=DOWN")
    try:
        job = submit(w, run="echo ran on $GRAPPE_SITE", objective="cost")
        first = w.run_until(job["id"], {"SUBMITTED"}, timeout=60)
        assert first["site"] == "hpc"
        slurm.stop_ctld()
        try:
            done = w.run_until(job["id"], TERMINAL, timeout=60)
        finally:
            slurm.start_ctld()
        assert done["state"] == "SUCCEEDED" and done["site"] == "local", done["reason"]
        assert any("has not answered" in h["reason"] for h in done["history"])
        assert logs(w, job["id"]).strip() == "ran on local"
        # Back again, the site is told to drop the attempt it was given.
        deadline = time.monotonic() + 60
        while True:
            w.tick()
            queue = slurm.command("squeue", "-h", "-o", "%j").stdout
            if f"grappe-{w.factory.factory_id}-{job['id']}-1" not in queue:
                break
            assert time.monotonic() < deadline, f"abandoned attempt still queued: {queue}"
            time.sleep(1)
    finally:
        slurm.command("scontrol", "update", "PartitionName=cpu", "State=UP")
        w.factory.close()


def test_plan_against_the_federation_from_the_cli(
    tmp_path: Path, slurm: Any, sshd: Any, ray_cluster: Any
) -> None:
    from tests.conftest import free_port, write_factory

    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "GRAPPE_HOME": str(home),
        "GRAPPE_PORT": str(port),
        "GRAPPE_URL": f"http://127.0.0.1:{port}",
        "GRAPPE_FACTORY": str(write_factory(tmp_path / "f.yaml", sites(slurm, sshd, ray_cluster))),
    }
    env.pop("GRAPPE_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "grappe.cli.main", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not (home / "admin.token").exists()
            or subprocess.run(
                [sys.executable, "-m", "grappe.cli.main", "sites"], env=env, capture_output=True
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, "grappe up did not start"
            time.sleep(0.5)
        spec = tmp_path / "job.yaml"
        spec.write_text(
            "name: train\nproject: demo\nresources: {gpus: H100:2}\nrun: nvidia-smi\n"
            "constraints: {certifications: [HDS]}\n"
        )
        res = subprocess.run(
            [sys.executable, "-m", "grappe.cli.main", "plan", str(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert "hpc" in res.stdout and "lacks certification HDS" in res.stdout
        assert "grappe accounts add hpc-login" in res.stdout
        sites_out = subprocess.run(
            [sys.executable, "-m", "grappe.cli.main", "sites"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        for name in ("local", "hpc", "hpc-login", "cloud"):
            assert name in sites_out
    finally:
        server.kill()
        server.wait()
