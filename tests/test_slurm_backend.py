"""The Slurm backend against a real one-host Slurm cluster (``tests/fixtures_slurm.py``).

Nothing is mocked: jobs go through sbatch to slurmctld and run under slurmd with
four fake GPUs. The time-limit job starts with the module and is checked last,
so that Slurm's 30-second time-limit sweep overlaps the other tests.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grappe.backends.base import Launch, SiteAccount, SiteUnavailable, Status, SubmitRejected
from grappe.backends.slurm import SlurmBackend
from grappe.backends.slurm_capacity import node_usable, queued_work
from grappe.backends.slurm_text import (
    duration_s,
    gres_gpus,
    status_from_exit_file,
    status_of,
    timestamp,
)
from grappe.domain.jobs import JobState
from grappe.domain.resources import Resources
from grappe.domain.sites import Site
from grappe.spec.factory import SiteSpec
from tests.fixtures_slurm import SlurmCluster

pytestmark = pytest.mark.integration

TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}


def make_site(slurm: SlurmCluster, **overrides: Any) -> Site:
    return SiteSpec.model_validate(slurm.site(**overrides)).to_domain()


def launch(pool: str = "cpu", run: str = "true", **fields: Any) -> Launch:
    values: dict[str, Any] = {
        "job_id": uuid.uuid4().hex[:10],
        "attempt": 1,
        "name": "test job",
        "project": "demo",
        "pool": pool,
        "resources": Resources(cpus=1),
        "run": run,
        "max_runtime_s": 600,
        "owner": "alice",
    }
    values.update(fields)
    return Launch(**values)


def wait_for(
    backend: SlurmBackend, handle: str, states: set[JobState], timeout: float = 30
) -> Status:
    """Poll until the attempt reaches one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([handle])[handle]
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle} stuck in {status.state} ({status.reason})")
        time.sleep(0.2)


def wait_until(check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm-site")


# The job that overruns its limit, submitted when the module's backend is made.
OVERRUN: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module")
def backend(slurm: SlurmCluster, root: Path) -> Iterator[SlurmBackend]:
    b = SlurmBackend(make_site(slurm), root)
    # Started first: Slurm ends it within 90 s, while the other tests run.
    job = launch(run="sleep 200", max_runtime_s=60)
    OVERRUN["job"] = (job.job_id, b.submit(job))
    yield b
    b.close()


def test_cpu_job_runs_its_archive_and_its_output_is_in_the_logs(
    backend: SlurmBackend, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "work.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"payload from the workdir\n"
        info = tarfile.TarInfo("data/input.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    job = launch(
        run="echo hello from slurm\ncat data/input.txt\necho to stderr >&2\npwd",
        setup="echo setting up",
        workdir_archive=archive,
    )
    before = datetime.now(UTC) - timedelta(seconds=5)
    handle = backend.submit(job)
    assert re.fullmatch(r"\d+@\w+", handle)
    assert wait_for(backend, handle, TERMINAL).state == JobState.SUCCEEDED
    # Slurm prints zone-less local times: read under a zone 14 hours from UTC, they must
    # still come back as the right instants.
    monkeypatch.setenv("TZ", "XST-14")
    far_east = SlurmBackend(backend.site, root)
    status = far_east.poll([handle])[handle]
    far_east.close()
    assert status.state == JobState.SUCCEEDED, status
    assert status.exit_code == 0
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert status.started_at is not None and before <= status.started_at <= after
    assert status.ended_at is not None and status.started_at <= status.ended_at <= after
    out = backend.logs(handle).decode()
    assert "setting up\nhello from slurm\npayload from the workdir\nto stderr\n" in out
    assert out.rstrip().endswith(f"/{job.job_id}/1/work")
    assert backend.logs(handle, offset=6, limit=4) == out.encode()[6:10]


def test_env_reaches_the_job_literally_and_grappe_env_does_not(
    backend: SlurmBackend, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "injected"
    tricky = f"a b 'c' \"d\" $(touch {marker}) `touch {marker}` $HOME ; \\ *"
    monkeypatch.setenv("GRAPPE_TEST_SECRET", "must not leak")
    job = launch(
        run='printf "<%s>\\n" "$GRAPPE_JOB_ID" "$GRAPPE_ATTEMPT" "$GRAPPE_POOL" "$TRICKY" '
        '"$PLAIN" "${GRAPPE_TEST_SECRET-unset}" "$CUDA_VISIBLE_DEVICES"',
        env={"TRICKY": tricky, "PLAIN": "plain"},
        resources=Resources(cpus=2, memory_bytes=512 * 1024**2),
        max_runtime_s=90,
    )
    handle = backend.submit(job)
    assert wait_for(backend, handle, TERMINAL).state == JobState.SUCCEEDED
    lines = backend.logs(handle).decode().splitlines()
    assert lines == [f"<{job.job_id}>", "<1>", "<cpu>", f"<{tricky}>", "<plain>", "<unset>", "<>"]
    assert not marker.exists()
    script = (root / job.job_id / "1" / "job.sh").read_text()
    for option in (
        f"--job-name=grappe-{job.job_id}-1",
        "--partition=cpu",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=2",
        "--mem=512M",
        "--time=2",  # 90 s rounded up to whole minutes
    ):
        assert f"#SBATCH {option}\n" in script
    assert "--gres" not in script


def test_gpu_job_sees_its_two_gpus(backend: SlurmBackend) -> None:
    job = launch(
        pool="gpu",
        run='echo "CUDA=$CUDA_VISIBLE_DEVICES"',
        resources=Resources(gpus=2, gpu_model="H100", cpus=1),
    )
    handle = backend.submit(job)
    assert wait_for(backend, handle, TERMINAL).state == JobState.SUCCEEDED
    assert re.search(r"^CUDA=\d+,\d+$", backend.logs(handle).decode(), re.M)


def test_exit_code_3_is_a_failure_with_that_code(backend: SlurmBackend, root: Path) -> None:
    job = launch(run="echo about to fail\nexit 3")
    handle = backend.submit(job)
    status = wait_for(backend, handle, TERMINAL)
    assert status.state == JobState.FAILED
    assert status.exit_code == 3
    assert "exit code 3" in status.reason
    # The script kept the outcome for when Slurm has forgotten the job.
    kept = status_from_exit_file((root / job.job_id / "1" / "exit_code").read_bytes())
    assert kept is not None and kept.state == JobState.FAILED and kept.exit_code == 3


def test_failed_setup_stops_before_run(backend: SlurmBackend) -> None:
    handle = backend.submit(launch(setup="false", run="echo should not run"))
    status = wait_for(backend, handle, TERMINAL)
    assert status.state == JobState.FAILED and status.exit_code == 1
    out = backend.logs(handle).decode()
    assert "setup failed with exit code 1" in out and "should not run" not in out


def test_cancel_stops_a_running_job_and_its_processes(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    handle = backend.submit(launch(run=f"sh -c 'echo $$ > {pid_file}; exec sleep 300'"))
    wait_for(backend, handle, {JobState.RUNNING})
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}").exists()
    backend.cancel(handle)
    status = wait_for(backend, handle, TERMINAL, timeout=20)
    assert status.state == JobState.CANCELLED
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    backend.cancel(handle)  # cancelling a finished job does nothing
    assert backend.poll([handle])[handle].state == JobState.CANCELLED


def test_capacity_shows_gpus_taken_and_work_pending(backend: SlurmBackend) -> None:
    idle = backend.capacity()
    assert idle.available, idle.error
    gpu = idle.capacity("gpu")
    assert gpu is not None and gpu.free_gpus == 4 and gpu.pending_gpu_seconds == 0
    big = backend.submit(launch(pool="gpu", run="sleep 300", resources=Resources(gpus=4, cpus=1)))
    waiting = backend.submit(
        launch(pool="gpu", run="true", resources=Resources(gpus=2, cpus=1), max_runtime_s=120)
    )
    try:
        wait_for(backend, big, {JobState.RUNNING})
        pending = backend.poll([waiting])[waiting]
        assert pending.state == JobState.SUBMITTED and pending.reason  # e.g. "Resources"
        assert backend.logs(waiting) == b""  # no output before it starts
        snap = backend.capacity()
        gpu, cpu = snap.capacity("gpu"), snap.capacity("cpu")
        assert gpu is not None and cpu is not None
        assert gpu.free_gpus == 0
        assert gpu.pending_gpu_seconds == 2 * 120
        assert 0 < gpu.running_gpu_seconds_left <= 4 * 600
        # One node serves both partitions: the CPU pool sees the CPUs the GPU job holds.
        assert cpu.free_cpus <= 2 and cpu.pending_gpu_seconds == 0
        assert gpu.free_memory_bytes <= (4000 - 900) * 1024**2
    finally:
        backend.cancel(waiting)
        backend.cancel(big)
    assert backend.poll([big])[big].state == JobState.CANCELLED


def test_submitting_twice_starts_one_slurm_job(
    backend: SlurmBackend, slurm: SlurmCluster, root: Path
) -> None:
    job = launch(run="sleep 1")
    first = backend.submit(job)
    assert backend.submit(job) == first
    # A control plane restarted on the same root finds it and does not submit it again.
    again = SlurmBackend(backend.site, root)
    try:
        assert again.find(job.job_id, 1) == first
        assert again.submit(job) == first
        assert again.find(job.job_id, 2) is None
    finally:
        again.close()
    named = slurm.command(
        "squeue", "-h", "-t", "all", "--name", f"grappe-{job.job_id}-1", "-o", "%i"
    )
    assert named.stdout.split() == [first.split("@")[0]]
    assert wait_for(backend, first, TERMINAL).state == JobState.SUCCEEDED


def test_unknown_partition_is_refused_with_slurms_words(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    site = make_site(slurm, backend={"partitions": {"cpu": "nosuch"}})
    b = SlurmBackend(site, tmp_path)
    with pytest.raises(SubmitRejected, match="(?i)invalid partition"):
        b.submit(launch())
    b.close()


def test_more_gpus_than_a_node_has_is_refused_by_slurm(backend: SlurmBackend) -> None:
    too_big = launch(pool="gpu", resources=Resources(gpus=8, gpu_model="H100", cpus=1))
    with pytest.raises(SubmitRejected, match="(?i)node configuration is not available"):
        backend.submit(too_big)


def test_a_job_slurm_forgot_is_told_by_its_exit_code_file(
    backend: SlurmBackend, root: Path
) -> None:
    handle = backend.submit(launch(run="exit 4"))
    assert wait_for(backend, handle, TERMINAL).state == JobState.FAILED
    attempt_dir = json.loads((root / ".slurm" / "handles" / f"{handle}.json").read_text())["dir"]
    # Slurm keeps finished jobs for MinJobAge (5 min here): stand in an id it never had.
    user = handle.split("@")[1]
    forgotten, lost = f"999999@{user}", f"999998@{user}"
    (root / ".slurm" / "handles" / f"{forgotten}.json").write_text(
        json.dumps({"user": user, "dir": attempt_dir})
    )
    statuses = backend.poll([forgotten, lost])
    assert statuses[forgotten].state == JobState.FAILED
    assert statuses[forgotten].exit_code == 4
    assert statuses[forgotten].ended_at is not None
    assert statuses[lost] == Status(JobState.FAILED, "unknown to Slurm")


def test_no_account_and_no_service_account_is_refused_with_the_fix(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    site = make_site(slurm, backend={"allow_service_account": False})
    b = SlurmBackend(site, tmp_path)
    with pytest.raises(SubmitRejected, match="grappe accounts add hpc --user NAME --key PATH"):
        b.submit(launch())
    # The member's own account (here: the local user) is used when given.
    me = SiteAccount(pwd.getpwuid(os.geteuid()).pw_name)
    handle = b.submit(launch(account=me))
    assert handle.endswith(f"@{me.user}")
    assert wait_for(b, handle, TERMINAL).state == JobState.SUCCEEDED
    b.close()


def test_controller_away_then_back(backend: SlurmBackend, slurm: SlurmCluster) -> None:
    handle = backend.submit(launch(run="sleep 2; echo done while away"))
    wait_for(backend, handle, {JobState.RUNNING})
    slurm.stop_ctld()
    try:
        snap = backend.capacity()
        assert not snap.available and snap.error
        with pytest.raises(SiteUnavailable):
            backend.poll([handle])
        wait_until(lambda: b"done while away" in backend.logs(handle), timeout=20)
    finally:
        slurm.start_ctld()
    assert wait_for(backend, handle, TERMINAL, timeout=30).state == JobState.SUCCEEDED
    assert backend.capacity().available


def test_time_limit_overrun_ends_in_timeout(backend: SlurmBackend, root: Path) -> None:
    job_id, handle = OVERRUN["job"]
    assert "#SBATCH --time=1\n" in (root / job_id / "1" / "job.sh").read_text()
    # Slurm enforces limits in a sweep every 30 s: up to 90 s after start, plus KillWait.
    status = wait_for(backend, handle, TERMINAL, timeout=120)
    assert status.state == JobState.TIMEOUT, status


# --------------------------------------------------------------- without a cluster


def test_settings_errors_name_the_setting_and_the_fix(tmp_path: Path) -> None:
    def site(**backend: object) -> Site:
        data = {
            "name": "hpc",
            "country": "FR",
            "jurisdiction": "EU",
            "carbon_g_per_kwh": 50,
            "backend": {"kind": "slurm", **backend},
            "pools": [{"name": "cpu", "cpus_per_node": 4, "memory_per_node": "4G"}],
        }
        return SiteSpec.model_validate(data).to_domain()

    with pytest.raises(ValueError, match="known_hosts.*ssh-keyscan"):
        SlurmBackend(site(access="ssh", host="login.example.eu"), tmp_path)
    with pytest.raises(ValueError, match="unknown backend setting 'partition'"):
        SlurmBackend(site(partition="x"), tmp_path)
    with pytest.raises(ValueError, match="'access'.*access: local"):
        SlurmBackend(site(access="rsh"), tmp_path)
    with pytest.raises(ValueError, match="partitions.*'gpu'"):
        SlurmBackend(site(partitions={"gpu": "g"}), tmp_path)
    with pytest.raises(ValueError, match="workdir"):
        SlurmBackend(site(workdir="/my jobs"), tmp_path)
    with pytest.raises(ValueError, match="allow_service_account.*service_account"):
        SlurmBackend(
            site(access="ssh", host="h", known_hosts="/k", allow_service_account=True), tmp_path
        )


def test_slurm_words_map_to_grappe_states() -> None:
    assert status_of("PENDING", "Resources").state == JobState.SUBMITTED
    assert status_of("COMPLETING").state == JobState.RUNNING
    failed = status_of("FAILED", "NonZeroExitCode", "3:0")
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert "NonZeroExitCode" in failed.reason
    oom = status_of("OUT_OF_MEMORY", "", "0:125")
    assert oom.state == JobState.FAILED and "memory" in oom.reason
    assert status_of("CANCELLED by 0").state == JobState.CANCELLED
    assert status_of("TIMEOUT", "TimeLimit", "0:15").state == JobState.TIMEOUT
    assert status_of("NODE_FAIL").state == JobState.FAILED
    assert timestamp("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert timestamp("Unknown") is None
    assert duration_s("1:00") == 60 and duration_s("2:00:00") == 7200
    assert duration_s("1-00:00:00") == 86400 and duration_s("UNLIMITED") is None
    assert gres_gpus("gpu:h100:2(IDX:0,2),gpu:a100:1(IDX:3)") == 3
    assert gres_gpus("gres:gpu:2") == 2 and gres_gpus("gres/gpu=4") == 4
    assert gres_gpus("N/A") == 0 and gres_gpus("(null)") == 0
    assert node_usable("MIXED") and not node_usable("IDLE+DRAIN") and not node_usable("DOWN*")
    work = queued_work("PENDING|gpu,cpu|2|8|2|1:00:00|1:00:00|gres:gpu:4|N/A|N/A|\n")
    assert work["gpu"].pending_gpu_s == 8 * 3600 and work["cpu"].pending_cpu_s == 8 * 3600
    gone = status_from_exit_file(b"143\nstarted=x\nended=y\nsignal=TERM\n")
    assert gone is not None and gone.state == JobState.FAILED and "SIGTERM" in gone.reason
