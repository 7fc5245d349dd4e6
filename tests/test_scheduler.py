"""The scheduler loop with real local processes: late binding, policies, fair share, allocations,
retries, timeouts, objectives, crash recovery and usage. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from grappe.backends import Launch
from grappe.domain.jobs import JobState
from grappe.domain.resources import Resources
from grappe.scheduler.loop import Scheduler
from grappe.scheduler.policies import policy
from grappe.store import job_repo, project_repo
from tests.conftest import World, local_site, open_world

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


def submit(world: World, token: str | None = None, **spec: object) -> dict:
    body = {"name": "j", "project": "demo", "run": "true", "max_runtime": "1m", **spec}
    resp = world.client(token).post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def state(world: World, job_id: int) -> dict:
    return world.client().get(f"/api/v1/jobs/{job_id}").json()


def test_jobs_start_only_where_they_fit_and_others_wait_with_a_reason(world: World) -> None:
    jobs = [submit(world, run="sleep 1", resources={"cpus": 2}) for _ in range(3)]
    world.tick()
    states = [state(world, j["id"]) for j in jobs]
    assert [s["state"] for s in states[:2]] != ["PENDING", "PENDING"]
    assert sum(s["state"] in ("SUBMITTED", "RUNNING") for s in states) == 2
    waiting = [s for s in states if s["state"] == "PENDING"]
    assert len(waiting) == 1
    assert waiting[0]["reason"].startswith("waiting for 2 CPUs on local/default")
    for j in jobs:
        assert world.run_until(j["id"], TERMINAL)["state"] == "SUCCEEDED"


def test_fifo_blocks_behind_the_head_but_grappe_lets_others_pass(tmp_path: Path) -> None:
    sites = [local_site("a", cpus=2), local_site("b", cpus=2)]
    for name, expect_small in (("fifo", "PENDING"), ("grappe", "SUBMITTED")):
        w = open_world(tmp_path / name, f"sqlite:///{tmp_path / name}.db", sites, policy_name=name)
        try:
            runner = submit(
                w, run="sleep 3", resources={"cpus": 1}, constraints={"sites": {"allow": ["a"]}}
            )
            w.tick()
            # the head job must run on 'a' and needs both its CPUs: it waits
            head = submit(
                w, run="true", resources={"cpus": 2}, constraints={"sites": {"allow": ["a"]}}
            )
            small = submit(w, run="true", resources={"cpus": 1})
            w.tick()
            assert state(w, head["id"])["state"] == "PENDING"
            got = state(w, small["id"])
            assert (got["state"] if got["state"] == "PENDING" else "SUBMITTED") == expect_small, (
                name
            )
            if name == "grappe":
                assert got["site"] == "b"
            for j in (runner, head, small):
                assert w.run_until(j["id"], TERMINAL)["state"] == "SUCCEEDED"
        finally:
            w.factory.close()


def test_jobs_too_big_for_one_site_do_not_hide_a_job_that_fits_another(tmp_path: Path) -> None:
    # The pass walks the first ``max_pending`` jobs of each pool: three 4-CPU jobs, oldest,
    # fill the cap of the big site's pool, and the 1-CPU job after them still starts.
    sites = [local_site("big", cpus=4), local_site("small", cpus=1)]
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'w.db'}", sites)
    w.scheduler.max_pending = 2
    try:
        runner = submit(w, run="sleep 3", resources={"cpus": 4})
        w.tick()
        assert state(w, runner["id"])["site"] == "big"
        wide = [submit(w, resources={"cpus": 4}) for _ in range(3)]
        small = submit(w, resources={"cpus": 1})
        w.tick()
        assert [state(w, j["id"])["state"] for j in wide] == ["PENDING"] * 3
        got = state(w, small["id"])
        assert got["state"] != "PENDING", got
        assert got["site"] == "small"
        for j in (runner, *wide, small):
            assert w.run_until(j["id"], TERMINAL)["state"] == "SUCCEEDED"
    finally:
        w.factory.close()


def test_fair_share_puts_the_least_served_project_first(world: World) -> None:
    admin = world.client()
    admin.post("/api/v1/projects", json={"name": "fresh", "gpu_hours": 0, "cpu_hours": 100})
    now = datetime.now(UTC)
    first = submit(world, run="true")
    world.client().post(f"/api/v1/jobs/{first['id']}/cancel")
    with world.factory.store.session() as s:
        demo = project_repo.project_by_name(s, "demo")
        project_repo.add_usage(s, demo.id, first["id"], 99, "local", 0.0, 90.0, 0.0, 0.0, now)
    # one slot only, so order decides who starts
    blocker = submit(world, run="sleep 2", resources={"cpus": 4})
    world.run_until(blocker["id"], {"SUBMITTED", "RUNNING"})
    old = submit(world, run="true", resources={"cpus": 4})
    new = submit(world, run="true", resources={"cpus": 4}, project="fresh")
    started_first = None
    while started_first is None:
        world.tick()
        for j in (old, new):
            if state(world, j["id"])["state"] != "PENDING":
                started_first = j["id"]
                break
    assert started_first == new["id"]
    for j in (blocker, old, new):
        world.run_until(j["id"], TERMINAL)


def test_exhausted_allocation_holds_jobs_until_an_operator_adds_hours(world: World) -> None:
    admin = world.client()
    admin.post("/api/v1/projects", json={"name": "broke", "gpu_hours": 0, "cpu_hours": 0})
    job = submit(world, project="broke")
    assert job["state"] == "PENDING" and job["reason"].startswith("held: project 'broke' has used")
    assert "grappe projects allocate broke --cpu-hours" in job["reason"]
    world.tick(2)
    assert state(world, job["id"])["state"] == "PENDING"
    admin.post("/api/v1/projects/broke/allocations", json={"gpu_hours": 0, "cpu_hours": 1})
    assert world.run_until(job["id"], TERMINAL)["state"] == "SUCCEEDED"


def test_usage_is_charged_on_every_end(world: World) -> None:
    job = submit(world, run="sleep 1", resources={"cpus": 2})
    done = world.run_until(job["id"], TERMINAL)
    assert done["state"] == "SUCCEEDED" and done["exit_code"] == 0
    report = world.client().get("/api/v1/usage").json()
    row = report["by_site"][0]
    assert row["project"] == "demo" and row["site"] == "local" and row["jobs"] == 1
    assert 2 * 1 / 3600 * 0.9 < row["cpu_hours"] < 2 * 5 / 3600
    assert row["kg_co2"] > 0
    demo = report["projects"][0]
    assert demo["left"]["cpu_hours"] < 100


def test_failed_attempts_are_retried_within_budget(world: World, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    run = f"if [ -e {marker} ]; then echo second; else touch {marker}; exit 7; fi"
    job = submit(world, run=run, retries=1)
    done = world.run_until(job["id"], TERMINAL)
    assert done["state"] == "SUCCEEDED" and done["attempt"] == 2
    reasons = [h["reason"] for h in done["history"]]
    assert any(
        "attempt 1 on local failed (exit code 7); placing again (retry 1 of 1)" in r
        for r in reasons
    )
    no_budget = submit(world, run="exit 7")
    failed = world.run_until(no_budget["id"], TERMINAL)
    assert failed["state"] == "FAILED" and failed["exit_code"] == 7
    assert failed["reason"] == "exit code 7"


def test_max_runtime_is_enforced(world: World) -> None:
    job = submit(world, run="sleep 60", max_runtime="1s")
    done = world.run_until(job["id"], TERMINAL)
    assert done["state"] == "TIMEOUT"
    assert "max_runtime" in done["reason"]


def test_objective_picks_the_cheap_or_the_green_site(tmp_path: Path) -> None:
    sites = [
        local_site("cheap", carbon_g_per_kwh=400, pool={"price_eur_cpu_hour": 0.01}),
        local_site("green", carbon_g_per_kwh=20, pool={"price_eur_cpu_hour": 0.05}),
    ]
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sites)
    try:
        by_cost = submit(w, objective="cost")
        by_carbon = submit(w, objective="carbon")
        assert w.run_until(by_cost["id"], TERMINAL)["site"] == "cheap"
        done = w.run_until(by_carbon["id"], TERMINAL)
        assert done["site"] == "green"
        ranked = [c["site"] for c in done["placement"]["candidates"]]
        assert ranked == ["green", "cheap"]
    finally:
        w.factory.close()


def test_gpu_jobs_get_their_devices_and_gpu_hours_are_charged(tmp_path: Path) -> None:
    sites = [local_site("gpu", pool={"gpu_model": "H100", "gpus_per_node": 2})]
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'gpu.db'}", sites)
    try:
        job = submit(
            w, run="echo devices=$CUDA_VISIBLE_DEVICES; sleep 1", resources={"gpus": "H100:2"}
        )
        done = w.run_until(job["id"], TERMINAL)
        assert done["state"] == "SUCCEEDED"
        logs = w.client().get(f"/api/v1/jobs/{job['id']}/logs").text
        assert "devices=0,1" in logs
        used = w.client().get("/api/v1/usage").json()["by_site"][0]
        assert used["gpu_hours"] > 2 * 0.9 / 3600
    finally:
        w.factory.close()


def test_a_job_left_mid_submission_is_found_not_run_twice(world: World, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    job = submit(world, run=f"echo $GRAPPE_JOB_ID >> {ledger}")
    now = datetime.now(UTC)
    # Crash after the site accepted the job but before its handle was stored.
    with world.factory.store.session() as s:
        job_repo.move_job(
            s,
            job["id"],
            [JobState.PENDING],
            JobState.SUBMITTED,
            "released",
            now,
            site="local",
            pool="default",
            attempt=1,
            handle=None,
        )
    world.factory.backends["local"].submit(
        Launch(
            job_id=str(job["id"]),
            attempt=1,
            name="j",
            project="demo",
            pool="default",
            resources=Resources(cpus=1),
            run=f"echo $GRAPPE_JOB_ID >> {ledger}",
            max_runtime_s=60,
        )
    )
    # Crash after the job was marked released but before the site got it.
    other = submit(world, run=f"echo $GRAPPE_JOB_ID >> {ledger}")
    with world.factory.store.session() as s:
        job_repo.move_job(
            s,
            other["id"],
            [JobState.PENDING],
            JobState.SUBMITTED,
            "released",
            now,
            site="local",
            pool="default",
            attempt=1,
            handle=None,
        )
    assert world.run_until(job["id"], TERMINAL)["state"] == "SUCCEEDED"
    assert world.run_until(other["id"], TERMINAL)["state"] == "SUCCEEDED"
    assert sorted(ledger.read_text().split()) == sorted([str(job["id"]), str(other["id"])])


def test_a_restarted_control_plane_reconciles_running_jobs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = open_world(tmp_path, url)
    job = submit(first, run="sleep 1; echo finished")
    first.run_until(job["id"], {"RUNNING", "SUBMITTED"})
    first.factory.close()  # the old control plane is gone; its job keeps running
    second = open_world(tmp_path, url)
    try:
        done = second.run_until(job["id"], TERMINAL)
        assert done["state"] == "SUCCEEDED"
        assert second.client().get(f"/api/v1/jobs/{job['id']}/logs").text == "finished\n"
    finally:
        second.factory.close()


def test_one_scheduler_leads_at_a_time(world: World) -> None:
    other = Scheduler(world.factory, policy("grappe"))
    assert world.scheduler.tick().led
    assert not other.tick().led
