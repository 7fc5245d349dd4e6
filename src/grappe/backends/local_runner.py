"""The local site's job runner: one detached process per attempt.

``LocalBackend.submit`` starts ``python -m grappe.backends.local_runner <attempt_dir>``
in a session of its own, so the runner and its job outlive the control plane
(as jobs outlive slurmctld under slurmd). The runner starts ``bash job.sh`` in
a new process group, enforces ``max_runtime_s``, turns a SIGTERM it receives
(a cancel) into the end of the whole group, and records the outcome.

Files of the attempt directory it uses: ``launch.json`` (read), ``cancel``
(a request left by the backend), ``runner.json`` and ``exit.json`` (written,
atomically), ``output.log`` (the job's stdout and stderr). Standard library
only: the backend imports the helpers below, and the runner starts fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

LAUNCH_FILE = "launch.json"
RUNNER_FILE = "runner.json"
EXIT_FILE = "exit.json"
CANCEL_FILE = "cancel"
# Created (exclusively) by the one runner that starts the attempt: a second runner, started
# by a control plane that thought the first never came, leaves at once.
CLAIM_FILE = "claimed"
LOG_FILE = "output.log"
SCRIPT_FILE = "job.sh"
WORK_DIR = "work"

KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL to the job's group
POLL_INTERVAL_S = 0.1
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "TMPDIR")


def now_iso() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_tmp(path: Path, data: dict[str, Any]) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` so that readers never see half a file."""
    os.replace(_write_tmp(path, data), path)


def write_json_exclusive(path: Path, data: dict[str, Any]) -> bool:
    """Create ``path`` atomically unless it exists; ``True`` when this call created it."""
    tmp = _write_tmp(path, data)
    try:
        # link() fails when the target exists, so a runner's own verdict is never overwritten.
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks)`` of ``pid`` from ``/proc``, ``None`` if unknown."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` runs, is no zombie, and is the process that started at ``start_time``."""
    stat = proc_stat(pid)
    if stat is not None:
        state, started = stat
        return state not in ("Z", "X") and (start_time is None or started == start_time)
    if os.path.exists("/proc/self/stat"):
        return False  # /proc works and has no such pid
    try:  # no /proc (macOS): the pid alone has to do
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runner_alive(runner: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether the runner that wrote ``runner`` (its ``runner.json``) still runs."""
    pid = (runner or {}).get("pid")
    return isinstance(pid, int) and process_alive(pid, (runner or {}).get("start_time"))


def signal_process(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process already gone is fine."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int, leader_start: int | None) -> bool:
    """Whether the job's process group ``pgid`` still has members (and is still the job's)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # The leader's pid stays reserved while its group has members, so a live process
    # with that pid and another start time means the group ended and the pid was reused.
    stat = proc_stat(pgid)
    return stat is None or leader_start is None or stat[1] == leader_start


def kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of group ``pgid``; a group already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_orphans(runner: dict[str, Any] | None) -> None:
    """SIGKILL what is left of a job whose runner is gone, from its ``runner.json``."""
    pgid = (runner or {}).get("pgid")
    if isinstance(pgid, int) and group_alive(pgid, (runner or {}).get("job_start_time")):
        kill_group(pgid, signal.SIGKILL)


def exit_record(state: str, exit_code: int | None, reason: str, started_at: Any) -> dict[str, Any]:
    """The content of ``exit.json``."""
    return {
        "state": state,
        "exit_code": exit_code,
        "reason": reason,
        "started_at": started_at,
        "ended_at": now_iso(),
    }


def job_script(job_id: str, attempt: int, setup: str | None, run: str) -> str:
    """``job.sh``: ``setup``, stopping if its last command fails, then ``run``; both verbatim."""
    lines = ["#!/usr/bin/env bash", f"# Grappe job {job_id}, attempt {attempt}."]
    if setup:
        lines += [
            "# --- setup ---",
            setup.rstrip("\n"),
            "__grappe_rc=$?",
            'if [ "$__grappe_rc" -ne 0 ]; then',
            '  echo "grappe: setup failed with exit code $__grappe_rc" >&2',
            '  exit "$__grappe_rc"',
            "fi",
        ]
    lines += ["# --- run ---", run.rstrip("\n"), ""]
    return "\n".join(lines)


def job_env(launch: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The job's environment: a minimal base, the job's own variables, then Grappe's."""
    env = {key: environ[key] for key in BASE_ENV_KEYS if key in environ}
    env.update({str(k): str(v) for k, v in (launch.get("env") or {}).items()})
    indices = launch.get("gpu_indices") or []
    env.update(
        GRAPPE_JOB_ID=str(launch["job_id"]),
        GRAPPE_JOB_NAME=str(launch.get("name", "")),
        GRAPPE_PROJECT=str(launch.get("project", "")),
        GRAPPE_ATTEMPT=str(launch["attempt"]),
        GRAPPE_SITE=str(launch.get("site", "")),
        GRAPPE_POOL=str(launch.get("pool", "")),
        # Empty rather than unset, so a job without GPUs sees none of the machine's.
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in indices),
    )
    return env


class Runner:
    """Runs one attempt from its directory to its ``exit.json``."""

    def __init__(self, attempt_dir: Path) -> None:
        self.dir = attempt_dir
        self.cancelled = False
        self.started_at: str | None = None

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.cancelled = True

    def _cancel_requested(self) -> bool:
        return self.cancelled or (self.dir / CANCEL_FILE).exists()

    def finish(self, state: str, exit_code: int | None, reason: str) -> int:
        """Record the outcome in ``exit.json``; the runner's exit status is 0 when it did."""
        write_json_atomic(
            self.dir / EXIT_FILE, exit_record(state, exit_code, reason, self.started_at)
        )
        return 0

    def run(self) -> int:
        """Start the job, supervise it, and record how it ended."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            claim = os.open(self.dir / CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return 0  # another runner has this attempt
        own = proc_stat(os.getpid())
        # Who claimed it: between the claim and runner.json the backend sees a live runner.
        claimant = {"pid": os.getpid(), "start_time": own[1] if own else None}
        os.write(claim, json.dumps(claimant).encode())
        os.close(claim)
        launch = read_json(self.dir / LAUNCH_FILE)
        if launch is None:
            return self.finish("FAILED", None, "the local runner found no readable launch.json")
        if self._cancel_requested():
            return self.finish("CANCELLED", None, "cancelled before it started")
        if (self.dir / EXIT_FILE).exists():
            return 0  # the backend already settled this attempt (it thought the runner lost)
        self.started_at = now_iso()
        with open(self.dir / LOG_FILE, "ab") as log:
            try:
                proc = subprocess.Popen(
                    ["bash", str(self.dir / SCRIPT_FILE)],
                    cwd=self.dir / WORK_DIR,
                    env=job_env(launch, os.environ),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                return self.finish("FAILED", None, f"could not start the job: {exc}")
        own = proc_stat(os.getpid())
        leader = proc_stat(proc.pid)
        write_json_atomic(
            self.dir / RUNNER_FILE,
            {
                "pid": os.getpid(),
                "start_time": own[1] if own else None,
                "pgid": proc.pid,
                "job_start_time": leader[1] if leader else None,
                "started_at": self.started_at,
            },
        )
        return self._supervise(proc, int(launch.get("max_runtime_s") or 0))

    def _supervise(self, proc: subprocess.Popen[bytes], max_runtime_s: int) -> int:
        deadline = time.monotonic() + max_runtime_s if max_runtime_s > 0 else None
        while not _exited(proc):
            if self._cancel_requested():
                self._stop(proc)
                return self.finish("CANCELLED", None, "cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                self._stop(proc)
                return self.finish("TIMEOUT", None, f"exceeded max_runtime {max_runtime_s}s")
            time.sleep(POLL_INTERVAL_S)
        # The main script ended: what it left in the background ends with it, as under Slurm.
        kill_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
        if code == 0:
            return self.finish("SUCCEEDED", 0, "")
        if code < 0:
            return self.finish("FAILED", None, f"killed by signal {_signal_name(-code)}")
        reason = f"exit code {code}"
        if code > 128 and _signal_name(code - 128) != str(code - 128):
            reason += f" (likely a command killed by signal {_signal_name(code - 128)})"
        return self.finish("FAILED", code, reason)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the whole group, SIGKILL after the grace; then reap the leader."""
        kill_group(proc.pid, signal.SIGTERM)
        grace_end = time.monotonic() + KILL_GRACE_S
        while not _exited(proc) and time.monotonic() < grace_end:
            time.sleep(POLL_INTERVAL_S)
        kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the job's leader exited, without reaping it where possible.

    An unreaped leader keeps its pid, hence the group id, from being reused
    while the runner still signals the group.
    """
    if hasattr(os, "waitid"):
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None
    return proc.poll() is not None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def main(argv: list[str]) -> int:
    """Entry point: ``python -m grappe.backends.local_runner <attempt_dir>``."""
    if len(argv) != 1:
        print("usage: python -m grappe.backends.local_runner ATTEMPT_DIR", file=sys.stderr)
        return 2
    runner = Runner(Path(argv[0]).resolve())
    try:
        return runner.run()
    except Exception as exc:  # noqa: BLE001 - any failure must still end in exit.json
        runner.finish("FAILED", None, f"the local runner failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
