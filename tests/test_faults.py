"""Faults: the control plane killed under load, a full disk, two schedulers, a Ray restart.

A Slurm controller that stops and returns is tested in test_federation.py
(``test_the_slurm_controller_going_away_mid_run_loses_no_job``) and
test_slurm_backend.py (``test_controller_away_then_back``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from grappe.backends.local import LocalBackend
from grappe.domain.jobs import JobState
from grappe.scheduler.loop import Scheduler, TickReport
from grappe.scheduler.policies import policy
from grappe.store.tables import JobEventRow
from tests.conftest import POSTGRES_ERROR, local_site, missing, open_world
from tests.fixtures_e2e import TERMINAL, Server, wait_for
from tests.fixtures_ray import DEPLOY as RAY_DEPLOY
from tests.fixtures_ray import NETNS_HINT, RayCluster, only_loopback, quiet_port
from tests.test_local_backend import launch, make_site, wait_for_terminal

pytestmark = pytest.mark.integration

CLIENTS = 8
SUBMISSIONS = 120


def _database(store: str, request: pytest.FixtureRequest) -> str | None:
    if store == "sqlite":
        return None
    postgres = request.getfixturevalue("postgres")
    if postgres is None:
        missing(f"PostgreSQL could not be started: {POSTGRES_ERROR}")
    return str(postgres.create_database())


class Submitter:
    """Clients that keep submitting, each submission with its own key, retried until answered."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.accepted: dict[str, int] = {}  # idempotency key -> job id
        self.lock = threading.Lock()
        self.errors = 0

    def submit(self, n: int) -> None:
        key = f"load-{n}-{uuid.uuid4().hex[:8]}"
        spec = {"name": f"load-{n}", "run": "true", "max_runtime": "1m"}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with self.server.api() as api:
                    resp = api.post("/jobs", json=spec, headers={"Idempotency-Key": key})
                if resp.status_code in (200, 201):
                    with self.lock:
                        self.accepted[key] = resp.json()["id"]
                    return
                assert resp.status_code < 500 or resp.status_code == 503, resp.text
            except httpx.TransportError:
                with self.lock:
                    self.errors += 1
            time.sleep(0.05)
        raise AssertionError(f"submission {key} was never answered")


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_kill_9_in_the_middle_of_a_submission_load_loses_and_repeats_nothing(
    store: str,
    start_server: Callable[..., Server],
    request: pytest.FixtureRequest,
) -> None:
    server = start_server(
        sites=[local_site(cpus=8, memory="8G")], database_url=_database(store, request)
    )
    load = Submitter(server)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(load.submit, n) for n in range(SUBMISSIONS)]
        wait_for("a third of the submissions", lambda: len(load.accepted) >= SUBMISSIONS // 3)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # while clients are sending
        server.proc.wait(10)
        killed_at = len(load.accepted)
        time.sleep(0.5)
        server.start()
        for f in futures:
            f.result()
    assert killed_at < SUBMISSIONS
    ids = list(load.accepted.values())
    assert len(ids) == SUBMISSIONS and len(set(ids)) == SUBMISSIONS

    def all_ended() -> list[dict[str, Any]] | None:
        jobs = server.jobs()
        return jobs if all(j["state"] in TERMINAL for j in jobs) else None

    jobs = wait_for("every job to end", all_ended, timeout=240, every=0.5)
    # Every accepted id once, nothing else (a request cut by the kill and retried is one job).
    assert Counter(j["id"] for j in jobs) == Counter(ids), server.log()
    failed = [(j["id"], j["state"], j["reason"]) for j in jobs if j["state"] != "SUCCEEDED"]
    assert not failed, failed
    assert {j["attempt"] for j in jobs} == {1}
    (row,) = server.cli_json("usage")["by_site"]
    assert row["jobs"] == SUBMISSIONS  # each charged once


# ------------------------------------------------------------------ full disk


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem, filled up: where a site's job folders will live."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("a full disk is made with a small tmpfs: run as root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_log_disk_fails_its_jobs_clearly_and_the_scheduler_goes_on(
    tmp_path: Path, full_disk: Path
) -> None:
    world = open_world(
        tmp_path / "w",
        f"sqlite:///{tmp_path / 'grappe.db'}",
        sites=[local_site("cramped"), local_site("roomy")],
    )
    try:
        site_root = world.factory.settings.site_root("cramped")
        site_root.parent.mkdir(parents=True, exist_ok=True)
        if site_root.exists():
            shutil.rmtree(site_root)
        site_root.symlink_to(full_disk)
        filler = _fill(full_disk)
        admin = world.client()

        def submit(site: str) -> int:
            spec = {
                "name": f"on-{site}",
                "run": "echo written",
                "max_runtime": "1m",
                "constraints": {"sites": {"allow": [site]}},
            }
            resp = admin.post("/api/v1/jobs", json=spec)
            assert resp.status_code == 201, resp.text
            return int(resp.json()["id"])

        cramped = submit("cramped")
        for _ in range(3):
            world.tick()  # passes run to their end: none raises
        job = admin.get(f"/api/v1/jobs/{cramped}").json()
        # Held at its site, saying why: the disk is full; nothing half-written is kept.
        assert job["state"] == "SUBMITTED", job
        assert "No space left on device" in job["reason"] and "tried again" in job["reason"]
        assert not list(full_disk.glob(f"{cramped}/*"))
        # Another site's work goes on meanwhile.
        roomy = submit("roomy")
        assert world.run_until(roomy, TERMINAL)["state"] == "SUCCEEDED"
        assert "written" in admin.get(f"/api/v1/jobs/{roomy}/logs").text
        # Space comes back: the waiting job runs, its output whole.
        filler.unlink()
        done = world.run_until(cramped, TERMINAL)
        assert done["state"] == "SUCCEEDED", done
        assert admin.get(f"/api/v1/jobs/{cramped}/logs").text == "written\n"
        with world.factory.store.session() as s:
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        world.factory.close()


# ------------------------------------------------------------------ two schedulers


def test_two_schedulers_at_once_never_dispatch_a_job_twice(tmp_path: Path, postgres: Any) -> None:
    if postgres is None:
        missing(f"PostgreSQL could not be started: {POSTGRES_ERROR}")
    world = open_world(tmp_path, postgres.create_database(), sites=[local_site(cpus=64)])
    try:
        admin = world.client()
        ids = [
            admin.post("/api/v1/jobs", json={"name": f"j{i}", "run": "true"}).json()["id"]
            for i in range(40)
        ]
        # Two replicas, each told it leads (the lease is bypassed): the state change from
        # PENDING is a compare-and-set, so each job is released by exactly one of them.
        replicas = [
            Scheduler(world.factory, policy("grappe"), holder=name) for name in ("r1", "r2")
        ]
        barrier = threading.Barrier(2)

        def run(replica: Scheduler) -> list[int]:
            barrier.wait()
            report = TickReport()
            replica.schedule(report)
            return report.started

        with ThreadPoolExecutor(2) as pool:
            started = [j for part in pool.map(run, replicas) for j in part]
        assert sorted(started) == sorted(ids)
        with world.factory.store.session() as s:
            submitted = Counter(
                s.scalars(select(JobEventRow.job_id).where(JobEventRow.state == "SUBMITTED"))
            )
        assert submitted == Counter(ids)
        # With the lease, only one of two replicas leads a pass at a time.
        led = [r.tick().led for r in replicas]
        assert led.count(True) == 1
    finally:
        world.factory.close()


# ------------------------------------------------------------------ a Ray head restarts


def test_a_ray_head_that_restarts_loses_no_job(tmp_path: Path) -> None:
    if not only_loopback():
        missing(NETNS_HINT)
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as exc:
        missing(f"Ray is not installed ({exc}): pip install -e '.[test]'")
    state = Path(tempfile.mkdtemp(prefix="grappe-rr-", dir="/tmp"))  # short: socket paths
    dashboard = quiet_port()
    ports = [str(dashboard), str(quiet_port(avoid=dashboard))]
    env = {**os.environ, "GRAPPE_RAY_BIN": str(Path(sys.executable).parent / "ray")}

    def up() -> str:
        done = subprocess.run(
            ["bash", str(RAY_DEPLOY / "up.sh"), str(state), *ports],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        if done.returncode != 0:
            missing(f"deploy/dev/ray/up.sh failed: {(done.stdout + done.stderr)[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def down() -> None:
        subprocess.run(["bash", str(RAY_DEPLOY / "down.sh"), str(state)], capture_output=True)

    cluster = RayCluster(address=up(), state=state)
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sites=[cluster.site()])
    try:
        admin = world.client()

        def submit(run: str, **extra: Any) -> int:
            spec = {"name": "on-ray", "run": run, "max_runtime": "5m", **extra}
            resp = admin.post("/api/v1/jobs", json=spec)
            assert resp.status_code == 201, resp.text
            return int(resp.json()["id"])

        running = submit("sleep 8; echo survived", retries=1)
        world.run_until(running, {"RUNNING"}, timeout=60)
        down()  # the head goes away with the job it ran
        waiting = submit("echo after the restart")
        for _ in range(3):
            world.tick()  # passes go on while the site is away
        assert admin.get(f"/api/v1/jobs/{waiting}").json()["state"] in ("PENDING", "SUBMITTED")
        up()  # the same head, on the same ports, with none of its jobs
        after = world.run_until(waiting, TERMINAL, timeout=120)
        assert after["state"] == "SUCCEEDED", after
        assert "after the restart" in admin.get(f"/api/v1/jobs/{waiting}/logs").text
        lost = world.run_until(running, TERMINAL, timeout=120)
        # The job the head forgot is run again within its retry budget, and ends once.
        assert lost["state"] == "SUCCEEDED" and lost["attempt"] == 2, lost
        assert "survived" in admin.get(f"/api/v1/jobs/{running}/logs").text
    finally:
        world.factory.close()
        down()
        shutil.rmtree(state, ignore_errors=True)


# ------------------------------------------------------------------ killed before the runner


def test_a_control_plane_killed_before_the_runner_started_runs_the_job_once(
    tmp_path: Path,
) -> None:
    """The one moment a kill -9 used to fail a job: its files written, its runner not started."""
    root = tmp_path / "site"
    ledger = tmp_path / "ledger"
    job = launch("31", f"echo ran >> {ledger}")
    before = LocalBackend(make_site(), root)

    def killed(attempt_dir: Path) -> Any:
        raise KeyboardInterrupt  # where the kill landed: nothing after this ran

    before._start_runner = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        before.submit(job)
    attempt = root / "31" / "1"
    past_grace = time.time() - 120
    os.utime(attempt, (past_grace, past_grace))
    after = LocalBackend(make_site(), root)  # the restarted control plane
    handle = after.find("31", 1)
    assert handle is not None
    status = wait_for_terminal(after, handle)
    assert status.state == JobState.SUCCEEDED, status
    # A late first runner finds the attempt claimed and leaves: the job ran once.
    late = subprocess.run(
        [sys.executable, "-m", "grappe.backends.local_runner", str(attempt)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        timeout=30,
    )
    assert late.returncode == 0
    assert ledger.read_text() == "ran\n"


@pytest.mark.parametrize("restarted_after_s", [0, 120])
def test_a_control_plane_killed_while_writing_an_attempt_submits_it_afresh(
    tmp_path: Path, restarted_after_s: int
) -> None:
    """A kill -9 while an attempt's files are written: the restart clears them and runs it once,
    whether it comes at once (within the grace an attempt has to start) or later."""
    root = tmp_path / "site"
    ledger = tmp_path / "ledger"
    job = launch("32", f"echo ran >> {ledger}")
    before = LocalBackend(make_site(), root)

    prepare = before._prepare

    def killed(*args: Any) -> None:
        prepare(*args)  # every file written but the mark that the attempt is whole
        raise KeyboardInterrupt  # where the kill landed: nothing after this ran

    before._prepare = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        before.submit(job)
    attempt = root / "32" / "1"
    assert attempt.is_dir()
    written = time.time() - restarted_after_s
    os.utime(attempt, (written, written))
    after = LocalBackend(make_site(), root)  # the restarted control plane
    assert after.find("32", 1) is None  # nothing ran there: the scheduler submits it again
    assert not attempt.exists()
    handle = after.submit(job)
    status = wait_for_terminal(after, handle)
    assert status.state == JobState.SUCCEEDED, status
    assert ledger.read_text() == "ran\n"
