"""The local backend runs real processes: outcomes, isolation, cancel, restarts."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from grappe.backends.base import Launch, Status, SubmitRejected
from grappe.backends.local import LocalBackend
from grappe.domain.jobs import JobState
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, Site

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and bash")

GIB = 1024**3


def make_site(gpus: int = 0) -> Site:
    pool = Pool(
        name="default",
        nodes=1,
        cpus_per_node=4,
        memory_bytes_per_node=8 * GIB,
        gpu_model="H100" if gpus else None,
        gpus_per_node=gpus,
    )
    return Site(
        name="local",
        operator="this machine",
        country="FR",
        jurisdiction="EU",
        certifications=(),
        carbon_g_per_kwh=56.0,
        backend="local",
        pools=(pool,),
    )


def launch(job_id: str, run: str, **kwargs: object) -> Launch:
    fields: dict = {
        "job_id": job_id,
        "attempt": 1,
        "name": f"test-{job_id}",
        "project": "demo",
        "pool": "default",
        "resources": Resources(cpus=1, memory_bytes=GIB),
        "run": run,
        "max_runtime_s": 60,
    }
    fields.update(kwargs)
    return Launch(**fields)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_terminal(backend: LocalBackend, handle: str, timeout: float = 20.0) -> Status:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll([handle])[handle]
        if status.state.terminal:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{handle} did not end within {timeout}s: {status}")


def wait_running(backend: LocalBackend, handle: str) -> None:
    wait_for(lambda: backend.poll([handle])[handle].state == JobState.RUNNING, what="RUNNING")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"  # a zombie is dead


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(make_site(), tmp_path / "site")


@pytest.fixture
def gpu_backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(make_site(gpus=2), tmp_path / "gpu-site")


def test_a_job_that_exits_zero_succeeds_with_its_output(backend: LocalBackend) -> None:
    handle = backend.submit(launch("1", "echo hello from grappe\necho on stderr >&2"))
    assert handle == "1/1"
    status = wait_for_terminal(backend, handle)
    assert status.state == JobState.SUCCEEDED
    assert status.exit_code == 0
    assert status.started_at is not None and status.ended_at is not None
    assert backend.logs(handle) == b"hello from grappe\non stderr\n"
    assert backend.logs(handle, offset=6, limit=4) == b"from"
    assert backend.find("1", 1) == handle
    assert backend.find("1", 2) is None


def test_a_non_zero_exit_fails_with_its_code(backend: LocalBackend) -> None:
    handle = backend.submit(launch("2", "echo about to fail\nexit 3"))
    status = wait_for_terminal(backend, handle)
    assert status.state == JobState.FAILED
    assert status.exit_code == 3
    assert status.reason == "exit code 3"


def test_a_job_killed_by_a_signal_fails_naming_it(backend: LocalBackend) -> None:
    handle = backend.submit(launch("3", "kill -KILL $$"))
    status = wait_for_terminal(backend, handle)
    assert (status.state, status.reason) == (JobState.FAILED, "killed by signal SIGKILL")


def test_the_job_sees_its_env_and_grappe_variables(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROL_PLANE_SECRET", "do-not-leak")
    run = 'echo "$GREETING|$GRAPPE_JOB_ID|$GRAPPE_JOB_NAME|$GRAPPE_PROJECT|$GRAPPE_ATTEMPT"\n'
    run += 'echo "$GRAPPE_SITE|$GRAPPE_POOL|[$CUDA_VISIBLE_DEVICES]|${CONTROL_PLANE_SECRET:-unset}"'
    handle = backend.submit(launch("4", run, env={"GREETING": "bonjour"}))
    assert wait_for_terminal(backend, handle).state == JobState.SUCCEEDED
    assert backend.logs(handle).decode().splitlines() == [
        "bonjour|4|test-4|demo|1",
        "local|default|[]|unset",
    ]


def test_gpus_are_assigned_distinct_indices(gpu_backend: LocalBackend) -> None:
    both = gpu_backend.submit(
        launch("5", "echo $CUDA_VISIBLE_DEVICES", resources=Resources(gpus=2, gpu_model="H100"))
    )
    assert wait_for_terminal(gpu_backend, both).state == JobState.SUCCEEDED
    assert gpu_backend.logs(both) == b"0,1\n"

    one_gpu = Resources(gpus=1, gpu_model="H100")
    run = "echo $CUDA_VISIBLE_DEVICES; while [ ! -e release ]; do sleep 0.05; done"
    first = gpu_backend.submit(launch("6", run, resources=one_gpu))
    second = gpu_backend.submit(launch("7", run, resources=one_gpu))
    with pytest.raises(SubmitRejected, match="0 GPU"):
        gpu_backend.submit(launch("8", run, resources=one_gpu))
    wait_for(lambda: gpu_backend.logs(first) and gpu_backend.logs(second), what="outputs")
    assert {gpu_backend.logs(first), gpu_backend.logs(second)} == {b"0\n", b"1\n"}
    for handle in (first, second):
        (gpu_backend.root / handle / "work" / "release").touch()
        assert wait_for_terminal(gpu_backend, handle).state == JobState.SUCCEEDED


def test_capacity_drops_while_a_job_runs_and_comes_back(gpu_backend: LocalBackend) -> None:
    idle = gpu_backend.capacity().capacity("default")
    assert idle is not None
    assert (idle.free_gpus, idle.free_cpus, idle.free_memory_bytes) == (2, 4, 8 * GIB)
    resources = Resources(gpus=1, gpu_model="H100", cpus=2, memory_bytes=3 * GIB)
    handle = gpu_backend.submit(
        launch("9", "while [ ! -e release ]; do sleep 0.05; done", resources=resources)
    )
    wait_running(gpu_backend, handle)
    busy = gpu_backend.capacity().capacity("default")
    assert busy is not None
    assert (busy.free_gpus, busy.free_cpus, busy.free_memory_bytes) == (1, 2, 5 * GIB)
    assert 0 < busy.running_gpu_seconds_left <= 60
    assert 60 < busy.running_cpu_seconds_left <= 120
    assert busy.pending_gpu_seconds == busy.pending_cpu_seconds == 0
    (gpu_backend.root / handle / "work" / "release").touch()
    wait_for(
        lambda: gpu_backend.capacity().capacity("default") == idle, what="capacity to come back"
    )


def test_submit_rejects_what_the_pool_cannot_hold(gpu_backend: LocalBackend) -> None:
    with pytest.raises(SubmitRejected, match="no pool 'big'"):
        gpu_backend.submit(launch("10", "true", pool="big"))
    with pytest.raises(SubmitRejected, match="3 GPUs"):
        gpu_backend.submit(launch("10", "true", resources=Resources(gpus=3)))
    with pytest.raises(SubmitRejected, match="nodes"):
        gpu_backend.submit(launch("10", "true", resources=Resources(cpus=2, nodes=2)))
    with pytest.raises(SubmitRejected, match="A100"):
        gpu_backend.submit(launch("10", "true", resources=Resources(gpus=1, gpu_model="A100")))
    assert gpu_backend.find("10", 1) is None


def test_max_runtime_is_enforced(backend: LocalBackend) -> None:
    started = time.monotonic()
    handle = backend.submit(launch("11", "echo started\nsleep 30", max_runtime_s=1))
    status = wait_for_terminal(backend, handle, timeout=15)
    assert status.state == JobState.TIMEOUT
    assert status.reason == "exceeded max_runtime 1s"
    assert time.monotonic() - started < 10
    assert backend.logs(handle) == b"started\n"


def test_cancel_kills_the_whole_process_group(backend: LocalBackend) -> None:
    handle = backend.submit(launch("12", "sleep 1000 &\necho $! > child.pid\nwait"))
    pid_file = backend.root / "12" / "1" / "work" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="child.pid")
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)
    backend.cancel(handle)
    status = backend.poll([handle])[handle]
    assert status.state == JobState.CANCELLED
    wait_for(lambda: not pid_alive(grandchild), timeout=5, what="the grandchild to die")
    backend.cancel(handle)  # cancelling a finished attempt does nothing
    assert backend.poll([handle])[handle].state == JobState.CANCELLED


def test_cancel_right_after_submit_never_lets_the_job_finish(
    backend: LocalBackend, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    handle = backend.submit(launch("22", f"sleep 0.5; touch {marker}"))
    backend.cancel(handle)
    assert backend.poll([handle])[handle].state == JobState.CANCELLED
    time.sleep(1.0)  # twice what the job needed to finish
    assert not marker.exists()


def test_gpus_of_an_ended_job_are_free_again_without_a_poll(gpu_backend: LocalBackend) -> None:
    two = Resources(gpus=2, gpu_model="H100")
    first = gpu_backend.submit(launch("23", "true", resources=two))
    wait_for(lambda: (gpu_backend.root / first / "exit.json").exists(), what="exit.json")
    second = gpu_backend.submit(launch("24", "echo $CUDA_VISIBLE_DEVICES", resources=two))
    assert wait_for_terminal(gpu_backend, second).state == JobState.SUCCEEDED
    assert gpu_backend.logs(second) == b"0,1\n"


def test_submitting_twice_starts_once(backend: LocalBackend, tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    job = launch("13", f"echo ran >> {marker}")
    handles: list[str] = []
    threads = [
        threading.Thread(target=lambda: handles.append(backend.submit(job))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handles == ["13/1"] * 8
    first = handles[0]
    assert wait_for_terminal(backend, first).state == JobState.SUCCEEDED
    assert backend.submit(job) == first  # even once it has ended
    time.sleep(0.3)
    assert marker.read_text() == "ran\n"


def test_a_restarted_control_plane_takes_running_jobs_back(tmp_path: Path) -> None:
    root = tmp_path / "site"
    before = LocalBackend(make_site(gpus=2), root)
    resources = Resources(gpus=2, gpu_model="H100", cpus=1)
    handle = before.submit(
        launch("14", "while [ ! -e release ]; do sleep 0.05; done; echo done", resources=resources)
    )
    wait_running(before, handle)
    del before

    after = LocalBackend(make_site(gpus=2), root)
    assert after.find("14", 1) == handle
    assert after.poll([handle])[handle].state == JobState.RUNNING
    capacity = after.capacity().capacity("default")
    assert capacity is not None and (capacity.free_gpus, capacity.free_cpus) == (0, 3)
    with pytest.raises(SubmitRejected):
        after.submit(launch("15", "true", resources=Resources(gpus=1)))
    (root / handle / "work" / "release").touch()
    assert wait_for_terminal(after, handle).state == JobState.SUCCEEDED
    assert after.logs(handle) == b"done\n"
    capacity = after.capacity().capacity("default")
    assert capacity is not None and capacity.free_gpus == 2


def test_jobs_survive_the_death_of_the_control_plane(tmp_path: Path) -> None:
    root = tmp_path / "site"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from grappe.backends.base import Launch
        from grappe.backends.local import LocalBackend
        from grappe.domain.resources import Resources
        from grappe.domain.sites import Pool, Site

        pool = Pool(name="default", nodes=1, cpus_per_node=4, memory_bytes_per_node=1 << 30)
        site = Site("local", "me", "FR", "EU", (), 56.0, "local", (pool,))
        backend = LocalBackend(site, Path({str(root)!r}))
        handle = backend.submit(Launch(
            job_id="16", attempt=1, name="survivor", project="demo", pool="default",
            resources=Resources(), run="sleep 2; echo survived", max_runtime_s=60,
        ))
        print(handle, flush=True)
        import time
        time.sleep(600)
        """
    )
    control_plane = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    try:
        assert control_plane.stdout is not None
        assert control_plane.stdout.readline().strip() == "16/1"
    finally:
        control_plane.send_signal(signal.SIGKILL)  # the control plane dies without a word
        control_plane.wait()
        if control_plane.stdout is not None:
            control_plane.stdout.close()
    backend = LocalBackend(make_site(), root)
    assert backend.poll(["16/1"])["16/1"].state in (JobState.SUBMITTED, JobState.RUNNING)
    assert wait_for_terminal(backend, "16/1").state == JobState.SUCCEEDED
    assert backend.logs("16/1") == b"survived\n"


def make_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_workdir_archive_is_unpacked(backend: LocalBackend, tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "code.tar.gz", {"src/data.txt": b"from the archive\n"})
    handle = backend.submit(launch("17", "cat src/data.txt", workdir_archive=archive))
    assert wait_for_terminal(backend, handle).state == JobState.SUCCEEDED
    assert backend.logs(handle) == b"from the archive\n"


def test_an_archive_cannot_write_outside_the_workdir(backend: LocalBackend, tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "evil.tar.gz", {"ok.txt": b"ok", "../evil": b"pwned"})
    with pytest.raises(SubmitRejected, match="evil"):
        backend.submit(launch("18", "true", workdir_archive=archive))
    attempt_dir = backend.root / "18" / "1"
    assert not (attempt_dir / "evil").exists()
    assert not (attempt_dir.parent / "evil").exists()
    assert not list(tmp_path.rglob("evil"))
    assert backend.find("18", 1) is None  # refused: a later submit may try again


def test_setup_runs_before_run_in_the_same_shell(backend: LocalBackend) -> None:
    handle = backend.submit(
        launch("19", 'echo "run sees $STEP"', setup="echo setup\nexport STEP=prepared")
    )
    assert wait_for_terminal(backend, handle).state == JobState.SUCCEEDED
    assert backend.logs(handle) == b"setup\nrun sees prepared\n"


def test_a_failing_setup_stops_the_job(backend: LocalBackend) -> None:
    handle = backend.submit(launch("20", "echo should not run", setup="false"))
    status = wait_for_terminal(backend, handle)
    assert (status.state, status.exit_code) == (JobState.FAILED, 1)
    assert b"should not run" not in backend.logs(handle)
    assert b"setup failed" in backend.logs(handle)


def test_unknown_handles_are_failed(backend: LocalBackend) -> None:
    statuses = backend.poll(["404/1", "../etc/1", "nonsense"])
    assert {s.state for s in statuses.values()} == {JobState.FAILED}
    assert statuses["404/1"].reason == "unknown to the local site"
    assert backend.logs("404/1") == b""
    backend.cancel("404/1")  # nothing to do, no error


def test_a_runner_killed_without_a_verdict_is_failed(backend: LocalBackend) -> None:
    handle = backend.submit(launch("21", "sleep 1000 &\necho $! > child.pid\nwait"))
    pid_file = backend.root / handle / "work" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="child.pid")
    grandchild = int(pid_file.read_text())
    wait_running(backend, handle)
    runner = json.loads((backend.root / handle / "runner.json").read_text())
    os.kill(runner["pid"], signal.SIGKILL)  # as a reboot would, minus the reboot
    status = wait_for_terminal(backend, handle)
    assert (status.state, status.reason) == (
        JobState.FAILED,
        "the local runner vanished without an exit status",
    )
    wait_for(lambda: not pid_alive(grandchild), timeout=5, what="the orphaned job to be ended")
