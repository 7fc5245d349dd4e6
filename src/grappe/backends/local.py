"""The local backend: runs jobs as processes on this machine.

Each attempt lives in ``root/<job_id>/<attempt>/``: ``launch.json``, ``job.sh``
(the user's ``setup`` then ``run``, verbatim), ``work/`` (its working
directory), ``output.log``, and the ``runner.json``/``exit.json`` written by
``local_runner``, a detached process per attempt that survives the control
plane. The attempt directory is the source of truth; the in-memory table of
active attempts (GPU indices, CPUs, memory) is rebuilt from it on start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grappe.backends import local_runner as lr
from grappe.backends.base import (
    Launch,
    SiteUnavailable,
    Status,
    SubmitRejected,
    single_node_pool,
)
from grappe.backends.staging import StagingFailed, stage_local
from grappe.domain.jobs import JobState
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot

PREPARED_FILE = "prepared"  # the attempt's files are all written: a runner may start it
SUBMIT_GRACE_S = 30.0  # how long an attempt may wait for its runner to report in
CANCEL_WAIT_S = 10.0  # how long cancel waits for the runner to stop the job
VANISHED = "the local runner vanished without an exit status"
UNKNOWN = "unknown to the local site"
INPUTS_DIR = "inputs"  # the attempt's staged datasets (GRAPPE_INPUTS_DIR)
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The directory holding the grappe package, so the runner imports this very copy.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@dataclass
class _Active:
    """What one unfinished attempt holds in its pool."""

    pool: str
    gpus: int
    cpus: int
    memory_bytes: int
    gpu_indices: tuple[int, ...]
    max_runtime_s: int
    started_at: datetime

    @classmethod
    def of(cls, data: dict[str, Any], indices: tuple[int, ...], started: datetime) -> _Active:
        """The entry of a launch, from ``launch.json``'s form of it."""
        res = data.get("resources") or {}
        return cls(
            pool=str(data.get("pool")),
            gpus=int(res.get("gpus", 0)),
            cpus=int(res.get("cpus", 1)),
            memory_bytes=int(res.get("memory_bytes", 0)),
            gpu_indices=indices,
            max_runtime_s=int(data.get("max_runtime_s", 0)),
            started_at=started,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


class LocalBackend:
    """Runs each attempt as a detached ``local_runner`` process on this machine."""

    def __init__(self, site: Site, root: Path) -> None:
        """Use ``root`` for this site's attempts and take back those still running."""
        self.site = site
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the API and scheduler threads call in concurrently
        self._active: dict[str, _Active] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        for attempt_dir in sorted(self.root.glob("*/*")):
            if not attempt_dir.name.isdigit() or (attempt_dir / lr.EXIT_FILE).exists():
                continue
            if self._half_written(attempt_dir):
                # Taken back, it would be found as submitted and end as vanished once its
                # grace ran out; left alone, ``find`` clears it for a fresh submit.
                continue
            self._status(f"{attempt_dir.parent.name}/{attempt_dir.name}")

    def capacity(self) -> SiteSnapshot:
        """Free capacity per pool: its size less what unfinished attempts hold."""
        try:
            self._refresh()
            now = _now()
            with self._lock:
                active = list(self._active.values())
            return SiteSnapshot(
                self.site, tuple(self._pool_capacity(p, active, now) for p in self.site.pools)
            )
        except Exception as exc:  # noqa: BLE001 - capacity reports, never raises
            return SiteSnapshot(self.site, (), available=False, error=str(exc))

    def submit(self, launch: Launch) -> str:
        """Start the attempt in a detached runner; idempotent on ``(job_id, attempt)``."""
        pool = self._check_fits(launch)
        if launch.resources.gpus:
            self._refresh()  # GPUs of attempts that ended since the last poll are free again
        handle = f"{launch.job_id}/{launch.attempt}"
        attempt_dir = self.root / launch.job_id / str(launch.attempt)
        with self._lock:
            if attempt_dir.exists():
                return handle
            free = self._free_gpu_indices(pool)
            if len(free) < launch.resources.gpus:
                raise SubmitRejected(
                    f"pool {pool.name} of site {self.site.name} has {len(free)} GPU(s) free "
                    f"now; the job asks for {launch.resources.gpus}"
                )
            indices = tuple(free[: launch.resources.gpus])
            try:
                attempt_dir.parent.mkdir(exist_ok=True)
                os.mkdir(attempt_dir, 0o700)  # not exist_ok: the directory is the start-once lock
            except FileExistsError:
                return handle
            except OSError as exc:
                raise SiteUnavailable(f"cannot create {attempt_dir}: {exc}") from exc
            self._active[handle] = _Active.of(asdict(launch), indices, _now())
        try:
            self._prepare(launch, attempt_dir, indices)
            (attempt_dir / PREPARED_FILE).touch()
            child = self._start_runner(attempt_dir)
        except SubmitRejected:
            self._discard(handle, attempt_dir)
            raise
        except OSError as exc:
            self._discard(handle, attempt_dir)
            raise SiteUnavailable(f"cannot start job {handle} locally: {exc}") from exc
        with self._lock:
            self._children[handle] = child
        return handle

    def find(self, job_id: str, attempt: int) -> str | None:
        """The handle of an attempt submitted before, or ``None``."""
        handle = f"{job_id}/{attempt}"
        attempt_dir = self._attempt_dir(handle)
        if attempt_dir is None or not attempt_dir.is_dir():
            return None
        with self._lock:
            ours = handle in self._active
        if not ours and self._half_written(attempt_dir):
            # Nothing ran: clear it for a fresh submit.
            self._discard(handle, attempt_dir)
            return None
        return handle

    def poll(self, handles: Sequence[str]) -> dict[str, Status]:
        """The state of each attempt, read from its directory and its runner."""
        self._reap()
        return {handle: self._status(handle) for handle in handles}

    def cancel(self, handle: str) -> None:
        """Stop the attempt and its whole process group; nothing when it already ended."""
        attempt_dir = self._attempt_dir(handle)
        if attempt_dir is None or not attempt_dir.is_dir() or (attempt_dir / lr.EXIT_FILE).exists():
            return
        # The marker stops a runner that has not started the job yet from starting it.
        (attempt_dir / lr.CANCEL_FILE).touch()
        runner = lr.read_json(attempt_dir / lr.RUNNER_FILE)
        if lr.runner_alive(runner):
            lr.signal_process(runner["pid"], signal.SIGTERM)
        if lr.runner_alive(runner) or self._child_running(handle):
            deadline = time.monotonic() + CANCEL_WAIT_S
            while time.monotonic() < deadline and not (attempt_dir / lr.EXIT_FILE).exists():
                time.sleep(0.05)
        if not (attempt_dir / lr.EXIT_FILE).exists():
            # The runner is gone or stuck: end what is left ourselves.
            runner = lr.read_json(attempt_dir / lr.RUNNER_FILE)
            if lr.runner_alive(runner):
                lr.signal_process(runner["pid"], signal.SIGKILL)
            lr.kill_orphans(runner)
            self._settle(attempt_dir, "CANCELLED", "cancelled", runner)
        self._status(handle)

    def logs(self, handle: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of ``output.log`` from ``offset``; ``b''`` when none yet."""
        attempt_dir = self._attempt_dir(handle)
        if attempt_dir is None:
            return b""
        try:
            with open(attempt_dir / lr.LOG_FILE, "rb") as f:
                f.seek(max(offset, 0))
                return f.read(max(limit, 0))
        except FileNotFoundError:
            return b""

    def close(self) -> None:
        """Nothing to release: the runners and their jobs keep running."""
        self._reap()

    def _attempt_dir(self, handle: str) -> Path | None:
        job_id, _, attempt = handle.rpartition("/")
        if not _JOB_ID_RE.match(job_id) or not attempt.isdigit():
            return None
        return self.root / job_id / attempt

    def _status(self, handle: str) -> Status:
        attempt_dir = self._attempt_dir(handle)
        if attempt_dir is None or not attempt_dir.is_dir():
            self._forget(handle)
            return Status(JobState.FAILED, UNKNOWN)
        ended = self._exit_status(handle, attempt_dir)
        if ended is not None:
            return ended
        runner = lr.read_json(attempt_dir / lr.RUNNER_FILE)
        if lr.runner_alive(runner):
            started = _parse_time(runner.get("started_at"))
            self._remember(handle, attempt_dir, started)
            return Status(JobState.RUNNING, started_at=started)
        # Look again: the runner writes exit.json just before it exits.
        ended = self._exit_status(handle, attempt_dir)
        if ended is not None:
            return ended
        young = time.time() - attempt_dir.stat().st_mtime < SUBMIT_GRACE_S
        claimant = lr.read_json(attempt_dir / lr.CLAIM_FILE)
        if runner is None and (young or self._child_running(handle) or lr.runner_alive(claimant)):
            self._remember(handle, attempt_dir, None)
            return Status(JobState.SUBMITTED)
        if runner is None and self._never_claimed(attempt_dir):
            # The control plane died between preparing the attempt and starting its
            # runner: nothing of the job ran. Start the runner now (a slow first one, if
            # any, finds the attempt claimed and leaves).
            os.utime(attempt_dir)  # a new grace period for the new runner
            child = self._start_runner(attempt_dir)
            with self._lock:
                self._children[handle] = child
            self._remember(handle, attempt_dir, None)
            return Status(JobState.SUBMITTED)
        # The runner died without a verdict (a reboot, a kill -9): end what it left.
        lr.kill_orphans(runner)
        self._settle(attempt_dir, "FAILED", VANISHED, runner)
        return self._exit_status(handle, attempt_dir) or Status(JobState.FAILED, VANISHED)

    @staticmethod
    def _half_written(attempt_dir: Path) -> bool:
        """Not marked whole: left by a control plane that died while writing it (when no
        thread here is writing it). No runner starts such an attempt, so nothing ran."""
        return not (attempt_dir / PREPARED_FILE).exists()

    @staticmethod
    def _never_claimed(attempt_dir: Path) -> bool:
        """Prepared whole and no runner ever took it."""
        return (attempt_dir / PREPARED_FILE).exists() and not (attempt_dir / lr.CLAIM_FILE).exists()

    def _exit_status(self, handle: str, attempt_dir: Path) -> Status | None:
        data = lr.read_json(attempt_dir / lr.EXIT_FILE)
        if data is None:
            return None
        self._forget(handle)
        try:
            state = JobState(str(data.get("state")))
        except ValueError:
            state = JobState.FAILED
        code = data.get("exit_code")
        return Status(
            state,
            str(data.get("reason") or ""),
            code if isinstance(code, int) else None,
            _parse_time(data.get("started_at")),
            _parse_time(data.get("ended_at")),
        )

    def _settle(
        self, attempt_dir: Path, state: str, reason: str, runner: dict[str, Any] | None
    ) -> None:
        """Write ``exit.json`` for a runner that cannot, unless one appeared meanwhile."""
        started = (runner or {}).get("started_at")
        lr.write_json_exclusive(
            attempt_dir / lr.EXIT_FILE, lr.exit_record(state, None, reason, started)
        )

    def _remember(self, handle: str, attempt_dir: Path, started: datetime | None) -> None:
        """Keep an unfinished attempt in the table, loading it after a restart."""
        with self._lock:
            entry = self._active.get(handle)
            if entry is None:
                data = lr.read_json(attempt_dir / lr.LAUNCH_FILE)
                if data is None:
                    return
                indices = tuple(data.get("gpu_indices") or ())
                started_at = _parse_time(data.get("submitted_at")) or _now()
                entry = self._active[handle] = _Active.of(data, indices, started_at)
            if started is not None:
                entry.started_at = started

    def _forget(self, handle: str) -> None:
        with self._lock:
            self._active.pop(handle, None)

    def _discard(self, handle: str, attempt_dir: Path) -> None:
        """Undo a submit that could not start, so that a retry starts afresh."""
        self._forget(handle)
        shutil.rmtree(attempt_dir, ignore_errors=True)

    def _check_fits(self, launch: Launch) -> Pool:
        if not _JOB_ID_RE.match(launch.job_id) or launch.attempt < 0:
            raise SubmitRejected(f"job id {launch.job_id!r} cannot name a local job directory")
        pool = single_node_pool(self.site, launch, "a local job runs on one")
        return pool

    def _free_gpu_indices(self, pool: Pool) -> list[int]:
        """GPU indices of ``pool`` no unfinished attempt holds; the caller holds the lock."""
        used = {i for a in self._active.values() if a.pool == pool.name for i in a.gpu_indices}
        return [i for i in range(pool.gpus_per_node) if i not in used]

    def _prepare(self, launch: Launch, attempt_dir: Path, indices: tuple[int, ...]) -> None:
        """Write the attempt's files and unpack its archive; ``SubmitRejected`` if unsafe."""
        data = asdict(launch)
        data.update(
            workdir_archive=str(launch.workdir_archive) if launch.workdir_archive else None,
            gpu_indices=list(indices),
            site=self.site.name,
            submitted_at=_now().isoformat(),
        )
        try:
            # Datasets first: a damaged input fails the job before anything of it runs.
            data["env"].update(stage_local(launch.inputs, str(attempt_dir / INPUTS_DIR)))
        except StagingFailed as exc:
            raise SubmitRejected(str(exc)) from exc
        lr.write_json_atomic(attempt_dir / lr.LAUNCH_FILE, data)
        (attempt_dir / lr.SCRIPT_FILE).write_text(
            lr.job_script(launch.job_id, launch.attempt, launch.setup, launch.run)
        )
        work = attempt_dir / lr.WORK_DIR
        work.mkdir()
        if launch.workdir_archive is None:
            return
        archive = Path(launch.workdir_archive)
        if not hasattr(tarfile, "data_filter"):
            raise SubmitRejected("this Python cannot unpack archives safely; use 3.11.4 or later")
        try:
            with tarfile.open(archive, "r:*") as tar:
                # The "data" filter refuses members and links that would land outside work/.
                tar.extractall(work, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise SubmitRejected(f"workdir archive {archive.name} refused: {exc}") from exc

    def _start_runner(self, attempt_dir: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p
        )
        # A new session, no inherited descriptors: the runner outlives this process.
        return subprocess.Popen(
            [sys.executable, "-m", "grappe.backends.local_runner", str(attempt_dir)],
            cwd=attempt_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def _refresh(self) -> None:
        """Drop the attempts that ended since the last poll from the table."""
        with self._lock:
            handles = list(self._active)
        self.poll(handles)

    def _child_running(self, handle: str) -> bool:
        with self._lock:
            child = self._children.get(handle)
        return child is not None and child.poll() is None

    def _reap(self) -> None:
        """Collect runners started here that have exited, so none lingers as a zombie."""
        with self._lock:
            for handle, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[handle]

    @staticmethod
    def _pool_capacity(pool: Pool, active: list[_Active], now: datetime) -> PoolCapacity:
        mine = [a for a in active if a.pool == pool.name]

        def left(a: _Active) -> float:
            return max(0.0, a.max_runtime_s - (now - a.started_at).total_seconds())

        return PoolCapacity(
            pool=pool.name,
            free_gpus=pool.total_gpus - sum(a.gpus for a in mine),
            free_cpus=pool.total_cpus - sum(a.cpus for a in mine),
            free_memory_bytes=pool.nodes * pool.memory_bytes_per_node
            - sum(a.memory_bytes for a in mine),
            free_nodes=max(pool.nodes - (1 if mine else 0), 0),
            running_gpu_seconds_left=sum(a.gpus * left(a) for a in mine),
            running_cpu_seconds_left=sum(a.cpus * left(a) for a in mine),
        )
