"""The Ray backend against a real Ray head (``ray_cluster``): no mocks.

Each test uses job ids of its own, since the head lives for the whole session,
and leaves no job running, since the head has only 2 CPUs and 2 (fake) GPUs.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grappe.backends import make_backend
from grappe.backends.base import Launch, SiteUnavailable, Status, SubmitRejected
from grappe.backends.ray import RayBackend
from grappe.domain.jobs import JobState
from grappe.domain.resources import Resources
from grappe.spec.factory import SiteSpec
from tests.conftest import free_port
from tests.fixtures_ray import RayCluster

pytestmark = pytest.mark.integration

DONE = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}


def ray_backend(site: dict[str, Any], root: Path) -> RayBackend:
    """The backend Grappe makes for a ``factory.yaml`` site of kind ray."""
    backend = make_backend(SiteSpec.model_validate(site).to_domain(), root)
    assert isinstance(backend, RayBackend)
    return backend


@pytest.fixture
def backend(ray_cluster: RayCluster, tmp_path: Path) -> Iterator[RayBackend]:
    b = ray_backend(ray_cluster.site(), tmp_path / "ray")
    yield b
    b.close()


def launch(run: str, **kw: Any) -> Launch:
    fields: dict[str, Any] = {
        "job_id": f"t{uuid.uuid4().hex[:10]}",
        "attempt": 0,
        "name": "test-job",
        "project": "demo",
        "pool": "default",
        "resources": Resources(cpus=1),
        "run": run,
        "max_runtime_s": 120,
    }
    fields.update(kw)
    return Launch(**fields)


def wait(backend: RayBackend, handle: str, states: set[JobState], timeout: float = 40) -> Status:
    """Poll until the attempt reaches one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([handle])[handle]
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle} stuck in {status}; logs: {backend.logs(handle)!r}")
        time.sleep(0.2)


def run_to_end(backend: RayBackend, job: Launch) -> tuple[Status, str]:
    handle = backend.submit(job)
    status = wait(backend, handle, DONE)
    return status, backend.logs(handle).decode()


def test_cpu_job_runs_with_its_variables_literal(backend: RayBackend) -> None:
    env = {
        "SPACED": "two  words and a tab\there",
        "QUOTED": 'it\'s "quoted" \\ back',
        "SUBST": "$(echo expanded) `echo expanded` $HOME ${PATH}",
    }
    job = launch(
        "echo hello-from-ray\n"
        'printf "[%s]\\n" "$SPACED" "$QUOTED" "$SUBST"\n'
        'echo "id=$GRAPPE_JOB_ID attempt=$GRAPPE_ATTEMPT site=$GRAPPE_SITE pool=$GRAPPE_POOL"\n'
        'echo "name=$GRAPPE_JOB_NAME project=$GRAPPE_PROJECT gpus=[${CUDA_VISIBLE_DEVICES-unset}]"',
        env=env,
        setup="echo setting-up",
    )
    status, out = run_to_end(backend, job)
    assert status.state == JobState.SUCCEEDED, out
    assert status.exit_code == 0
    assert status.started_at and status.ended_at and status.started_at <= status.ended_at
    assert "setting-up\nhello-from-ray\n" in out
    for value in env.values():
        assert f"[{value}]\n" in out
    assert f"id={job.job_id} attempt=0 site=cloud pool=default\n" in out
    # A job that asks no GPU sees none: empty, not unset, as on the local backend.
    assert "name=test-job project=demo gpus=[]\n" in out
    handle = backend.find(job.job_id, 0)
    assert handle is not None
    assert backend.logs(handle, offset=5, limit=20) == out.encode()[5:25]
    assert backend.find(job.job_id, 1) is None


def test_gpu_job_sees_the_gpu_ray_reserved(backend: RayBackend) -> None:
    job = launch('echo "cuda=[$CUDA_VISIBLE_DEVICES]"', resources=Resources(gpus=1, cpus=1))
    status, out = run_to_end(backend, job)
    assert status.state == JobState.SUCCEEDED, out
    # Ray sets CUDA_VISIBLE_DEVICES to the fake GPU it reserved for the entrypoint.
    assert "cuda=[0]\n" in out or "cuda=[1]\n" in out, out


def test_workdir_archive_is_unpacked_for_the_job(backend: RayBackend, tmp_path: Path) -> None:
    archive = tmp_path / "work.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data, mode in (
            ("data/input.txt", b"the input\n", 0o644),
            ("run.sh", b"#!/bin/sh\necho ran-from-archive\n", 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    status, out = run_to_end(
        backend, launch("cat data/input.txt && ./run.sh", workdir_archive=archive)
    )
    assert status.state == JobState.SUCCEEDED, out
    assert "the input\nran-from-archive\n" in out
    assert not any(backend.root.iterdir()), "Ray has its copy: the staged one is removed"


def test_exit_code_fails_the_job_and_ends_what_it_left(backend: RayBackend) -> None:
    marker = f"grappe-left-{uuid.uuid4().hex[:8]}"
    run = f"sh -c 'sleep 300' {marker} &\necho about-to-fail; exit 3"
    status, out = run_to_end(backend, launch(run))
    assert status.state == JobState.FAILED
    assert status.reason == "exit code 3"
    assert status.exit_code == 3
    assert "about-to-fail" in out
    assert _gone(marker), "a process the job left in the background still runs"


def test_job_can_use_the_ray_cluster(backend: RayBackend) -> None:
    code = "import ray; ray.init(); print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))"
    status, out = run_to_end(backend, launch(f'python -c "{code}"'))
    assert status.state == JobState.SUCCEEDED, out
    assert "answer 42\n" in out


def test_max_runtime_is_enforced(backend: RayBackend) -> None:
    started = time.monotonic()
    status, _ = run_to_end(backend, launch("sleep 60", max_runtime_s=2))
    assert status.state == JobState.TIMEOUT
    assert status.reason == "exceeded max_runtime 2s"
    assert time.monotonic() - started < 30


def _pgrep(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


def _gone(marker: str, timeout: float = 10) -> bool:
    """Whether every process whose command line holds ``marker`` ends within ``timeout``."""
    deadline = time.monotonic() + timeout
    while _pgrep(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _pgrep(marker)


def test_cancel_ends_the_job_and_all_its_processes(backend: RayBackend) -> None:
    marker = f"grappe-cancel-{uuid.uuid4().hex[:8]}"
    # A child, a child that ignores SIGTERM, and an orphan that left the process tree.
    run = (
        f"sh -c 'sleep 300' {marker}-child &\n"
        f"sh -c 'trap \"\" TERM; sleep 300' {marker}-stubborn &\n"
        f"(sh -c 'sleep 300' {marker}-orphan &)\n"
        "echo started; wait"
    )
    handle = backend.submit(launch(run))
    try:
        wait(backend, handle, {JobState.RUNNING})
        deadline = time.monotonic() + 20
        while len(_pgrep(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_pgrep(marker)) == 3, backend.logs(handle)
        backend.cancel(handle)
        status = wait(backend, handle, DONE, timeout=20)
        assert status.state == JobState.CANCELLED
        assert _gone(marker), _pgrep(marker)
        backend.cancel(handle)  # cancelling a finished job does nothing
    finally:
        backend.cancel(handle)


def test_cancel_of_a_job_ray_still_queues(backend: RayBackend) -> None:
    marker = f"grappe-queued-{uuid.uuid4().hex[:8]}"
    hog = backend.submit(launch("sleep 120", resources=Resources(gpus=2, cpus=1)))
    try:
        wait(backend, hog, {JobState.RUNNING})
        queued = backend.submit(
            launch(f"sh -c 'sleep 300' {marker}; echo finished", resources=Resources(gpus=1))
        )
        assert backend.poll([queued])[queued].state == JobState.SUBMITTED
        started = time.monotonic()
        backend.cancel(queued)
        assert time.monotonic() - started < 30  # not held until the GPUs free up (120 s)
    finally:
        backend.cancel(hog)
    # Ray starts it once the GPUs are free and stops it at once: it never finishes.
    status = wait(backend, queued, DONE)
    assert status.state == JobState.CANCELLED
    assert "finished" not in backend.logs(queued).decode()
    assert _gone(marker), _pgrep(marker)


def test_submit_twice_makes_one_ray_job(backend: RayBackend, ray_cluster: RayCluster) -> None:
    from ray.job_submission import JobSubmissionClient

    job = launch("echo once")
    first = backend.submit(job)
    assert backend.submit(job) == first
    wait(backend, first, DONE)
    assert backend.submit(job) == first  # and again once it has ended
    jobs = JobSubmissionClient(ray_cluster.address).list_jobs()
    assert [j.submission_id for j in jobs].count(first) == 1
    assert backend.logs(first).decode().count("once\n") == 1


def _snapshot_until(backend: RayBackend, check: Any, timeout: float = 30) -> Any:
    """Ray's cluster status is refreshed every few seconds: ask until it agrees."""
    deadline = time.monotonic() + timeout
    while True:
        snap = backend.capacity()
        cap = snap.capacity("default") if snap.available else None
        if cap is not None and check(cap):
            return cap
        if time.monotonic() > deadline:
            raise AssertionError(f"capacity never matched: {snap}")
        time.sleep(0.5)


def test_capacity_shows_what_a_running_job_takes(backend: RayBackend) -> None:
    idle = _snapshot_until(backend, lambda c: c.free_cpus == 2)
    assert (idle.free_gpus, idle.free_nodes) == (2, 1)
    assert idle.free_memory_bytes == 4 * 1024**3
    job = launch("sleep 120", resources=Resources(cpus=2, gpus=1, memory_bytes=1024**3))
    handle = backend.submit(job)
    try:
        wait(backend, handle, {JobState.RUNNING})
        busy = _snapshot_until(backend, lambda c: c.free_cpus == 0)
        assert (busy.free_gpus, busy.free_nodes) == (1, 0)
        assert busy.free_memory_bytes == 3 * 1024**3
        assert 0 < busy.running_cpu_seconds_left <= 2 * 120
        assert 0 < busy.running_gpu_seconds_left <= 120
    finally:
        backend.cancel(handle)
    wait(backend, handle, DONE)


def test_pool_limits_are_refused_before_ray(backend: RayBackend) -> None:
    with pytest.raises(SubmitRejected, match="3 GPUs"):
        backend.submit(launch("true", resources=Resources(gpus=3, cpus=1)))
    with pytest.raises(SubmitRejected, match="no pool 'gpu'"):
        backend.submit(launch("true", pool="gpu"))


def test_unreachable_ray_is_unavailable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # bound, then released: nothing listens
    site = RayCluster(closed, tmp_path).site(backend={"kind": "ray", "address": closed})
    b = ray_backend(site, tmp_path)
    snap = b.capacity()
    assert snap.available is False
    assert closed in snap.error
    with pytest.raises(SiteUnavailable):
        b.poll(["grappe-x-0"])
    with pytest.raises(SiteUnavailable):
        b.submit(launch("true"))


def test_unknown_handle_fails(backend: RayBackend) -> None:
    assert backend.poll(["grappe-never-0"]) == {
        "grappe-never-0": Status(JobState.FAILED, "unknown to Ray")
    }
    assert backend.logs("grappe-never-0") == b""
    backend.cancel("grappe-never-0")


def test_without_ray_installed_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grappe.backends import ray as ray_module

    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # import fails
    ray_module._client_class.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"pip install 'grappe\[ray\]'"):
            ray_backend(RayCluster("http://unused", tmp_path).site(), tmp_path)
    finally:
        ray_module._client_class.cache_clear()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"adress": "http://x"}, "unknown field 'adress'"),
        ({"address": "127.0.0.1:8265"}, "must be the dashboard's URL"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_settings_say_what_to_fix(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    site = RayCluster("http://unused", tmp_path).site(backend={"kind": "ray", **settings})
    with pytest.raises(ValueError, match=message):
        ray_backend(site, tmp_path)
