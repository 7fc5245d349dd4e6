"""The Slurm backend: drives a Slurm cluster with its commands (sbatch, squeue, scancel).

Commands run through a ``Shell``: on this machine (``access: local``) or on the
site's login node over SSH (``access: ssh``), as the member's own site account
when they registered one, else as the site's service account if the operator
allows it. Each attempt lives in ``<workdir>/<job_id>/<attempt>/`` on the site:
``job.sh`` (the batch script), ``work/`` (its working directory), ``output.log``
(stdout and stderr), ``slurm_id`` (written once sbatch accepted it, which makes
submit idempotent) and ``exit_code`` (written by the script itself, so the
outcome is known after Slurm forgets the job). Handles are ``<slurm id>@<user>``.

A small index under ``root/.slurm/`` maps attempts and handles to their
directories and owners, so that a restarted control plane finds them again.
Slurm prints times in the caller's time zone without saying which: every
command that reports times runs under ``TZ=UTC``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from grappe.backends import slurm_text as st
from grappe.backends.base import Launch, SiteAccount, SiteUnavailable, Status, SubmitRejected
from grappe.backends.shell import Result, Shell
from grappe.backends.slurm_capacity import job_format, snapshot
from grappe.backends.slurm_jobdir import Index, prepare
from grappe.backends.slurm_settings import SlurmSettings, parse_settings
from grappe.backends.slurm_shells import SiteShells
from grappe.domain.jobs import JobState
from grappe.domain.sites import Site, SiteSnapshot

__all__ = ["SlurmBackend"]

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0  # how long cancel waits for the job's processes to be gone
POLL_BATCH = 500  # job ids per squeue call, to keep command lines short
_SUBMIT_LOCKS = 64
UNKNOWN = "unknown to Slurm"
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HANDLE_RE = re.compile(r"^(\d+)@([A-Za-z0-9._][A-Za-z0-9._-]*)$")
# What sbatch inherits on this machine: enough to run, none of the control plane's secrets.
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "SLURM_CONF")
# Slurm prints local times without a zone, and reads a few settings from the environment.
_READ_ENV = ("env", "TZ=UTC", "SLURM_TIME_FORMAT=standard")


def _parse_handle(handle: str) -> tuple[str, str] | None:
    match = _HANDLE_RE.match(handle)
    return (match.group(1), match.group(2)) if match else None


class SlurmBackend:
    """Runs each attempt as one Slurm batch job, through ``sbatch`` on the site."""

    def __init__(
        self,
        site: Site,
        root: Path,
        accounts: Callable[[str], SiteAccount | None] | None = None,
        namespace: str = "",
    ) -> None:
        """Check the site's settings (``ValueError`` naming the fix) and open the index.

        ``accounts`` resolves a site user name to its credentials, so that jobs a member
        submitted before a restart are polled and cancelled as that member. ``namespace``
        (the factory's id) keeps job names and directories of two factories on one site apart.
        """
        self.site = site
        self.namespace = namespace
        self.root = Path(root)
        self.settings: SlurmSettings = parse_settings(site)
        self._shells = SiteShells(site, self.settings, self.root, accounts)
        self._index = Index(self.root)
        self._lock = threading.Lock()  # API and scheduler threads call in at once
        # Submits of one attempt are serialized (a few locks shared by hash, so they stay few).
        self._submitting = [threading.Lock() for _ in range(_SUBMIT_LOCKS)]
        self._dirs: dict[str, str] = {}  # handle -> attempt directory, as found
        self._sacct = True  # until sacct says accounting storage is off

    # ------------------------------------------------------------------ verbs

    def capacity(self) -> SiteSnapshot:
        """Free GPUs/CPUs/memory/nodes per pool (partition) and the work queued there."""
        try:
            shell = self._shells.reader()
            nodes = self._slurm(shell, ["scontrol", "show", "node", "-o", "-d"])
            argv = ["squeue", "-h", "-r", "-t", "PD,R,CG,S", "-O", job_format()]
            jobs = self._slurm(shell, argv)
            partitions = {p.name: self._partition(p.name) for p in self.site.pools}
            return snapshot(self.site, partitions, nodes.stdout, jobs.stdout)
        except Exception as exc:  # noqa: BLE001 - capacity reports, never raises
            return SiteSnapshot(self.site, (), available=False, error=str(exc))

    def submit(self, launch: Launch) -> str:
        """Submit the attempt with sbatch; idempotent on ``(job_id, attempt)``."""
        if not _JOB_ID_RE.match(launch.job_id) or launch.attempt < 0:
            raise SubmitRejected(f"job id {launch.job_id!r} cannot name a Slurm job directory")
        if self.site.pool(launch.pool) is None:
            names = ", ".join(p.name for p in self.site.pools)
            raise SubmitRejected(f"site {self.site.name} has no pool {launch.pool!r} ({names})")
        account = self._shells.acting_account(launch)
        shell = self._shells.shell(account)
        with self._submit_lock(launch.job_id, launch.attempt):
            attempt_dir = self._attempt_dir(shell, launch.job_id, launch.attempt)
            handle = self._submitted(shell, launch, attempt_dir)
            if handle is not None:
                return handle
            self._index.save(
                "attempts", f"{launch.job_id}.{launch.attempt}", shell.user, attempt_dir
            )
            prepare(
                shell,
                shell is self._shells.local,
                launch,
                attempt_dir,
                self.site.name,
                self._partition(launch.pool),
                self.settings.accounts.get(launch.project),
                self.namespace,
            )
            result = self._run_sbatch(shell, f"{attempt_dir}/{st.SCRIPT_FILE}")
            if not result.ok:
                message = result.message()
                if st.unreachable(message):
                    raise SiteUnavailable(f"site {self.site.name}: {message}")
                raise SubmitRejected(message)
            slurm_id = result.stdout.strip().split(";")[0]
            if not slurm_id.isdigit():
                raise SiteUnavailable(f"sbatch answered {result.stdout.strip()!r}, not a job id")
            return self._record(shell, slurm_id, attempt_dir)

    def find(self, job_id: str, attempt: int) -> str | None:
        """The handle of an attempt submitted before (after a crash), or ``None``."""
        if not _JOB_ID_RE.match(job_id):
            return None
        entry = self._index.load("attempts", f"{job_id}.{attempt}")
        candidates: list[tuple[Shell, str]] = []
        if entry is not None:
            shell = self._shells.for_user(entry["user"])
            if shell is not None:
                candidates.append((shell, entry["dir"]))
        default = self._shells.default()
        if default is not None:
            guess = (default, self._attempt_dir(default, job_id, attempt))
            if guess not in candidates:
                candidates.append(guess)
        for shell, attempt_dir in candidates:
            slurm_id = self._read(shell, f"{attempt_dir}/{st.ID_FILE}").decode().strip()
            if slurm_id.isdigit():
                return self._remember(f"{slurm_id}@{shell.user}", attempt_dir)
        # sbatch may have accepted it just before a crash, before slurm_id was written.
        for shell, attempt_dir in candidates:
            found = self._by_name(shell, job_id, attempt)
            if found is not None:
                return self._record(shell, found, attempt_dir)
        return None

    def poll(self, handles: Sequence[str]) -> dict[str, Status]:
        """The state of each handle: squeue, then scontrol, sacct, then the ``exit_code`` file.

        Raises ``SiteUnavailable`` when the controller does not answer. A handle whose owner
        has no usable credentials here is left out, to be asked about again later.
        """
        out: dict[str, Status] = {}
        by_user: dict[str, dict[str, str]] = {}
        for handle in handles:
            parsed = _parse_handle(handle)
            if parsed is None:
                out[handle] = Status(JobState.FAILED, f"{handle!r} is not a Slurm job handle")
                continue
            by_user.setdefault(parsed[1], {})[handle] = parsed[0]
        for user, ids in by_user.items():
            shell = self._shells.for_user(user)
            if shell is None:
                log.warning("site %s: no account to poll %s's jobs %s", self.site.name, user, ids)
                continue
            items = list(ids.items())
            for start in range(0, len(items), POLL_BATCH):
                out.update(self._poll_as(shell, dict(items[start : start + POLL_BATCH])))
        return out

    def cancel(self, handle: str) -> None:
        """``scancel`` as the job's owner, then wait briefly for its processes to end."""
        parsed = _parse_handle(handle)
        if parsed is None:
            return
        slurm_id, user = parsed
        shell = self._shells.for_user(user)
        if shell is None:
            raise SiteUnavailable(f"site {self.site.name}: no account to cancel {user}'s job")
        result = self._slurm(shell, ["scancel", slurm_id], check=False)
        if not result.ok and not st.unknown_job(result.message()):
            if "already completing or completed" not in result.message():
                raise SiteUnavailable(f"scancel {slurm_id}: {result.message()}")
        # The job shows as COMPLETING until Slurm has killed its processes: wait for that.
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            listed = self._slurm(shell, ["squeue", "-h", "-j", slurm_id, "-o", "%T"], check=False)
            if not listed.ok or not listed.stdout.strip():
                return
            time.sleep(0.2)

    def logs(self, handle: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the attempt's ``output.log`` from ``offset``."""
        parsed = _parse_handle(handle)
        shell = self._shells.for_user(parsed[1]) if parsed else None
        if parsed is None or shell is None:
            return b""
        attempt_dir = self._dir_of(handle, shell)
        if attempt_dir is None:
            return b""
        return self._read(shell, f"{attempt_dir}/{st.LOG_FILE}", max(offset, 0), max(limit, 0))

    def close(self) -> None:
        """Close the shells (SSH connections); jobs keep running under Slurm."""
        self._shells.close()

    # ------------------------------------------------------------------ commands

    def _slurm(self, shell: Shell, argv: list[str], check: bool = True) -> Result:
        """A Slurm command under ``TZ=UTC``; ``SiteUnavailable`` when the controller is away."""
        result = shell.run([*_READ_ENV, *self._remote_env(shell), *argv])
        if not result.ok and st.unreachable(result.message()):
            raise SiteUnavailable(f"site {self.site.name}: {result.message()}")
        if check and not result.ok:
            raise SiteUnavailable(f"site {self.site.name}: {argv[0]}: {result.message()}")
        return result

    def _run_sbatch(self, shell: Shell, script: str) -> Result:
        argv = ["sbatch", "--parsable", script]
        if shell is self._shells.local:
            # A clean environment: the job inherits sbatch's, which must not leak Grappe's.
            env = {**os.environ, **self.settings.env}
            keep = [f"{k}={env[k]}" for k in _BASE_ENV if k in env]
            keep += [f"{k}={v}" for k, v in self.settings.env.items() if k not in _BASE_ENV]
            argv = ["env", "-i", *keep, *argv]
        elif self.settings.env:
            argv = ["env", *self._remote_env(shell), *argv]
        return shell.run(argv, timeout=120)

    def _remote_env(self, shell: Shell) -> list[str]:
        """``NAME=value`` of the site's ``env`` for a login node (the local shell has them)."""
        if shell is self._shells.local:
            return []
        return [f"{k}={v}" for k, v in self.settings.env.items()]

    def _by_name(self, shell: Shell, job_id: str, attempt: int) -> str | None:
        """The id of a job named after the attempt that ``shell``'s user owns, if Slurm has one."""
        name = st.job_name(job_id, attempt, self.namespace)
        argv = ["squeue", "-h", "-t", "all", "-u", shell.user, "--name", name, "-o", "%i"]
        ids = self._slurm(shell, argv).stdout.split()
        return ids[0] if ids and ids[0].isdigit() else None

    def _poll_as(self, shell: Shell, ids: dict[str, str]) -> dict[str, Status]:
        fmt = st.SEP.join(("%i", "%T", "%r", "%S", "%e"))
        result = self._slurm(
            shell, ["squeue", "-h", "-j", ",".join(ids.values()), "-o", fmt], False
        )
        if not result.ok and not st.unknown_job(result.message()):
            raise SiteUnavailable(f"site {self.site.name}: squeue: {result.message()}")
        listed = {}
        for line in result.stdout.splitlines():
            parts = line.split(st.SEP)
            if len(parts) == 5:
                listed[parts[0]] = parts
        out = {}
        for handle, slurm_id in ids.items():
            if slurm_id in listed:
                _, state, reason, start, end = listed[slurm_id]
                out[handle] = st.status_of(state, reason, start=start, end=end)
                continue
            status = self._forgotten(shell, handle, slurm_id)
            if status is not None:
                out[handle] = status
        return out

    def _forgotten(self, shell: Shell, handle: str, slurm_id: str) -> Status | None:
        """The end of a job squeue no longer lists; ``None`` when it cannot be told now."""
        shown = self._slurm(shell, ["scontrol", "show", "job", "-o", slurm_id], check=False)
        if shown.ok and shown.stdout.strip():
            f = st.parse_fields(shown.stdout.splitlines()[0])
            return st.status_of(
                f.get("JobState", ""),
                f.get("Reason", ""),
                f.get("ExitCode", ""),
                f.get("StartTime", ""),
                f.get("EndTime", ""),
                f.get("TimeLimit", ""),
            )
        unsure = False
        if self._sacct:
            fields = "JobIDRaw,State,ExitCode,Start,End,Timelimit"
            argv = ["sacct", "-n", "-X", "-P", "-j", slurm_id, "--format", fields]
            acct = self._slurm(shell, argv, check=False)
            if acct.ok:
                for line in acct.stdout.splitlines():
                    p = line.split("|")
                    if len(p) == 6 and p[0] == slurm_id:
                        return st.status_of(p[1], "", p[2], p[3], p[4], p[5])
            elif "accounting storage is disabled" in acct.message().lower():
                self._sacct = False
            else:
                unsure = True  # slurmdbd may be away: do not call the job lost yet
        attempt_dir = self._dir_of(handle, shell)
        if attempt_dir is not None:
            ended = st.status_from_exit_file(self._read(shell, f"{attempt_dir}/{st.EXIT_FILE}"))
            if ended is not None:
                return ended
        return None if unsure else Status(JobState.FAILED, UNKNOWN)

    # ------------------------------------------------------------------ files

    def _attempt_dir(self, shell: Shell, job_id: str, attempt: int) -> str:
        base = self._shells.workdir(shell)
        return posixpath.join(
            base, *([self.namespace] if self.namespace else []), job_id, str(attempt)
        )

    def _read(self, shell: Shell, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        try:
            return shell.read(path, offset, limit)
        except OSError as exc:
            raise SiteUnavailable(f"site {self.site.name}: {exc}") from exc

    def _submitted(self, shell: Shell, launch: Launch, attempt_dir: str) -> str | None:
        """The handle of this attempt if an earlier submit got it into Slurm."""
        slurm_id = self._read(shell, f"{attempt_dir}/{st.ID_FILE}").decode().strip()
        if slurm_id.isdigit():
            return self._remember(f"{slurm_id}@{shell.user}", attempt_dir)
        if self._read(shell, f"{attempt_dir}/{st.SCRIPT_FILE}", 0, 1):
            # A submit that died between sbatch and slurm_id: the job name tells.
            found = self._by_name(shell, launch.job_id, launch.attempt)
            if found is not None:
                return self._record(shell, found, attempt_dir)
        return None

    def _record(self, shell: Shell, slurm_id: str, attempt_dir: str) -> str:
        """Write ``slurm_id`` next to the job and index its handle."""
        try:
            shell.put(f"{slurm_id}\n".encode(), f"{attempt_dir}/{st.ID_FILE}", 0o600)
        except OSError as exc:
            log.warning("site %s: cannot write %s/slurm_id: %s", self.site.name, attempt_dir, exc)
        return self._remember(f"{slurm_id}@{shell.user}", attempt_dir)

    def _remember(self, handle: str, attempt_dir: str) -> str:
        with self._lock:
            self._dirs[handle] = attempt_dir
        self._index.save("handles", handle, handle.partition("@")[2], attempt_dir)
        return handle

    def _dir_of(self, handle: str, shell: Shell) -> str | None:
        """The attempt directory of a handle: memory, the index, then Slurm's StdOut."""
        with self._lock:
            attempt_dir = self._dirs.get(handle)
        if attempt_dir is not None:
            return attempt_dir
        entry = self._index.load("handles", handle)
        if entry is not None:
            attempt_dir = entry["dir"]
        else:
            slurm_id = handle.partition("@")[0]
            shown = self._slurm(shell, ["scontrol", "show", "job", "-o", slurm_id], check=False)
            fields = st.parse_fields(shown.stdout.strip()) if shown.ok else {}
            out = fields.get("StdOut", "")
            if not fields.get("JobName", "").startswith("grappe-") or not out.endswith(st.LOG_FILE):
                return None
            attempt_dir = posixpath.dirname(out)
        self._remember(handle, attempt_dir)
        return attempt_dir

    def _submit_lock(self, job_id: str, attempt: int) -> threading.Lock:
        return self._submitting[hash((job_id, attempt)) % _SUBMIT_LOCKS]

    def _partition(self, pool: str) -> str:
        return self.settings.partitions.get(pool, pool)
