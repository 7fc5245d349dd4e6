"""The Ray backend: each attempt is a Ray job, driven through the dashboard's Jobs API.

``submit`` stages ``root/<job_id>/<attempt>/`` (the workdir archive unpacked, and
``.grappe/job.sh``: the variables exported, then ``setup`` and ``run`` verbatim),
hands it to Ray as the job's ``working_dir`` (Ray uploads it, honouring any
``.gitignore``/``.rayignore`` in it) and removes it. The handle is the submission id
``grappe-<job_id>-<attempt>``: Ray refuses a second job with it, so submit is idempotent.

The entrypoint runs the script under coreutils ``timeout``: the job gets a process
group of its own, ``max_runtime`` is enforced (exit 124, or 137 after SIGKILL:
``TIMEOUT``), Ray's stop reaches the whole group, and what the job leaves in it
when it ends is killed, as under Slurm. ``CUDA_VISIBLE_DEVICES`` is empty for a job
without GPUs and, for the others, what Ray set. The variables are also the runtime
env's ``env_vars``, so the Ray tasks a job starts inherit them (Ray expands ``$VAR``
in those; the script sees every value literally).

Pools: a Ray site has one pool, the whole cluster, or one pool with GPUs and one
without, taking the nodes with and without GPUs. Ray places the entrypoint; the pool
is checked at submit and used for accounting. Capacity is the dashboard's
``/api/cluster_status`` (the autoscaler's report, a few seconds old) less the active
jobs of ``list_jobs``. As Ray does: a job pending for resources fails after
``RAY_JOB_START_TIMEOUT_SECONDS`` (15 min); a pending job that is stopped starts and
is stopped at once when Ray schedules it; ``Launch.account`` is not used.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import shutil
import tarfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grappe.backends.base import (
    Launch,
    SiteUnavailable,
    Status,
    SubmitRejected,
    single_node_pool,
)
from grappe.backends.local_runner import _signal_name, job_script
from grappe.domain.jobs import JobState
from grappe.domain.sites import PoolCapacity, Site, SiteSnapshot
from grappe.spec.errors import SpecError, validate

SCRIPT = ".grappe/job.sh"
KILL_AFTER_S = 2  # timeout's SIGKILL to the group must land within Ray's 3 s stop grace
CANCEL_WAIT_S = 15.0  # how long cancel waits for Ray to report the job stopped
LIST_ABOVE = 16  # poll more handles than this with one list_jobs call
UNKNOWN = "unknown to Ray"
_RESOURCES = ("CPU", "GPU", "memory")  # as Ray names them
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STATUS_RE = re.compile(r"status code (\d{3})")
_EXIT_RE = re.compile(r"exit code (-?\d+)")
_ERROR_LINE_RE = re.compile(r"^\w*(?:Error|Exception): (.+)$", re.M)
# Run by Ray with /bin/sh. `timeout` makes its own process group ($p). A stop that comes
# before $p exists is remembered ($s) and passed on; the last kill ends what the job left.
_ENTRYPOINT = (
    "s=; p=; trap 's=1; [ -n \"$p\" ] && kill -TERM $p 2>/dev/null' INT TERM; "
    "timeout -k {kill_after} {limit} bash {script} & p=$!; "
    '[ -n "$s" ] && kill -TERM $p; '
    "wait $p; rc=$?; "
    "while kill -0 $p 2>/dev/null; do wait $p; rc=$?; done; "
    "kill -KILL -$p 2>/dev/null; exit $rc"
)
T = TypeVar("T")


class RaySettings(BaseModel):
    """The ``backend:`` keys of a Ray site in ``factory.yaml``."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(default="http://127.0.0.1:8265", description="the dashboard URL")
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="per API request")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"address {value!r} must be the dashboard's URL, e.g. http://127.0.0.1:8265"
            )
        return value.rstrip("/")


class _Refused(Exception):
    """Ray answered a request with an HTTP error; ``status`` is its code (4xx wins)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@functools.cache
def _client_class() -> type:
    """``JobSubmissionClient`` with a timeout on every request (Ray's own sets none)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise ValueError(
            f"the ray backend needs Ray's Jobs API client ({exc}); pip install 'grappe[ray]'"
        ) from None

    class Client(JobSubmissionClient):
        def __init__(self, address: str, timeout_s: float) -> None:
            self.timeout_s = timeout_s
            super().__init__(address)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self.timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

        def get_json(self, endpoint: str) -> Any:
            response = self._do_request("GET", endpoint)
            if response.status_code != 200:
                self._raise_error(response)
            return response.json()

    return Client


def submission_id(job_id: str, attempt: int, namespace: str = "") -> str:
    """The Ray submission id, and Grappe handle, of an attempt (``namespace``: the factory's id)."""
    return f"grappe-{namespace}-{job_id}-{attempt}" if namespace else f"grappe-{job_id}-{attempt}"


class RayBackend:
    """Runs attempts as Ray jobs on the cluster whose dashboard is ``settings.address``."""

    def __init__(self, site: Site, root: Path, namespace: str = "") -> None:
        """Check the site's settings and pools; ``root`` holds attempts while they are staged.

        ``namespace`` (the factory's id) goes into submission ids: two factories, or one
        whose store was reset, never take each other's Ray jobs for their own.
        """
        self.namespace = namespace
        try:
            self.settings = validate(RaySettings, dict(site.settings), f"site {site.name} backend")
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        gpu_pools = [p for p in site.pools if p.gpus_per_node]
        if len(gpu_pools) > 1 or len(site.pools) - len(gpu_pools) > 1:
            raise ValueError(
                f"site {site.name}: a Ray site has one pool, or one pool with GPUs and one "
                f"without; merge pools {[p.name for p in site.pools]} or split the site"
            )
        _client_class()  # a missing `ray` package is a setup error: report it now
        self.site = site
        self.root = Path(root)
        self._client: Any = None
        self._lock = threading.Lock()  # one staging at a time per attempt directory

    def capacity(self) -> SiteSnapshot:
        """Free resources per pool from Ray's cluster status, and the Grappe work ahead."""
        try:
            report = self._call(lambda c: c.get_json("/api/cluster_status"))
            load = ((report.get("data") or {}).get("clusterStatus") or {}).get("loadMetricsReport")
            if not load:
                raise SiteUnavailable("Ray's autoscaler has not reported the cluster yet")
            nodes = load.get("usageByNode") or {"cluster": load.get("usage") or {}}
            jobs = self._call(lambda c: c.list_jobs())
            return SiteSnapshot(self.site, self._pool_capacities(nodes, jobs))
        except Exception as exc:  # noqa: BLE001 - capacity reports, never raises
            return SiteSnapshot(self.site, (), available=False, error=str(exc))

    def submit(self, launch: Launch) -> str:
        """Stage the attempt and submit it as a Ray job; idempotent on ``(job_id, attempt)``."""
        self._check_fits(launch)
        handle = submission_id(launch.job_id, launch.attempt, self.namespace)
        stage = self.root / launch.job_id / str(launch.attempt)
        with self._lock:
            if self._info(handle) is not None:
                return handle
            try:
                self._stage(launch, stage)
                self._submit(launch, handle, stage)
            finally:
                shutil.rmtree(stage, ignore_errors=True)  # Ray keeps its uploaded copy
                with contextlib.suppress(OSError):
                    stage.parent.rmdir()  # only when no other attempt of the job is staging
        return handle

    def find(self, job_id: str, attempt: int) -> str | None:
        """The handle of an attempt Ray knows, or ``None``."""
        handle = submission_id(job_id, attempt, self.namespace)
        return handle if self._info(handle) is not None else None

    def poll(self, handles: Sequence[str]) -> dict[str, Status]:
        """The state of each handle as Ray reports it."""
        if len(handles) > LIST_ABOVE:
            jobs = {j.submission_id: j for j in self._call(lambda c: c.list_jobs())}
            return {h: _status(jobs.get(h)) for h in handles}
        return {h: _status(self._info(h)) for h in handles}

    def cancel(self, handle: str) -> None:
        """Ask Ray to stop the job and wait until it has; nothing when it already ended.

        Ray sends SIGTERM to the entrypoint and its descendants, ``timeout`` passes it
        to the job's process group and SIGKILLs the group after ``KILL_AFTER_S``.
        """
        if self._known(lambda c: c.stop_job(handle), handle) is None:
            return
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            info = self._info(handle)
            # A pending job stops when Ray schedules it: no point waiting here.
            if info is None or info.status in ("STOPPED", "SUCCEEDED", "FAILED", "PENDING"):
                return
            time.sleep(0.2)

    def logs(self, handle: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the job's output from ``offset``, as Ray keeps it."""
        text = self._known(lambda c: c.get_job_logs(handle), handle) or ""
        start = max(offset, 0)
        return str(text).encode()[start : start + max(limit, 0)]

    def close(self) -> None:
        """Forget the client; Ray's client holds no connection between requests."""
        self._client = None

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` with the client: ``SiteUnavailable`` when Ray does not answer."""
        where = self.settings.address
        try:
            if self._client is None:
                self._client = _client_class()(where, self.settings.timeout_s)
            return fn(self._client)
        except OSError as exc:  # requests' errors and refused connections are OSErrors
            raise SiteUnavailable(f"Ray at {where} did not answer: {exc}") from exc
        except RuntimeError as exc:
            codes = [int(c) for c in _STATUS_RE.findall(str(exc))]
            if not codes:  # the client's version check, or a failure of its own
                raise SiteUnavailable(f"Ray at {where} cannot be used: {exc}") from exc
            # The dashboard wraps its job agent's 4xx in a 500: the refusal is the 4xx.
            status = next((c for c in codes if 400 <= c < 500), codes[0])
            raise _Refused(status, str(exc)) from exc

    def _known(self, fn: Callable[[Any], T], handle: str) -> T | None:
        """``fn``'s answer, or ``None`` when Ray does not know ``handle``."""
        try:
            return self._call(fn)
        except _Refused as exc:
            if exc.status == 404:
                return None
            raise SiteUnavailable(f"Ray failed on {handle}: {_message(exc)}") from exc

    def _info(self, handle: str) -> Any:
        """Ray's ``JobDetails`` of ``handle``, or ``None``."""
        return self._known(lambda c: c.get_job_info(handle), handle)

    def _submit(self, launch: Launch, handle: str, stage: Path) -> None:
        r = launch.resources
        limit = max(launch.max_runtime_s, 0)  # 0: timeout never fires
        entrypoint = _ENTRYPOINT.format(kill_after=KILL_AFTER_S, limit=limit, script=SCRIPT)
        # For people reading Ray's dashboard, and for _status and capacity: Ray's JobDetails
        # carries no entrypoint resources.
        metadata = {
            f"grappe_{k}": str(v)
            for k, v in dict(
                job_id=launch.job_id,
                attempt=launch.attempt,
                name=launch.name,
                project=launch.project,
                pool=launch.pool,
                max_runtime_s=limit,
                cpus=r.cpus,
                gpus=r.gpus,
                memory_bytes=r.memory_bytes,
            ).items()
        }
        try:
            self._call(
                lambda c: c.submit_job(
                    entrypoint=entrypoint,
                    submission_id=handle,
                    runtime_env={"working_dir": str(stage), "env_vars": self._env(launch)},
                    metadata=metadata,
                    entrypoint_num_cpus=r.cpus or None,
                    entrypoint_num_gpus=r.gpus or None,
                    entrypoint_memory=r.memory_bytes or None,
                )
            )
        except _Refused as exc:
            if "already exists" in str(exc):
                return  # submitted meanwhile by another caller: same attempt, same handle
            if exc.status >= 500:
                raise SiteUnavailable(f"Ray failed to take {handle}: {_message(exc)}") from exc
            raise SubmitRejected(f"Ray refused the job: {_message(exc)}") from exc
        except (ValueError, TypeError) as exc:  # the client's own checks (size, runtime env)
            raise SubmitRejected(f"Ray refused the job: {exc}") from exc

    def _env(self, launch: Launch) -> dict[str, str]:
        env = {str(k): str(v) for k, v in launch.env.items()}
        env.update(
            GRAPPE_JOB_ID=launch.job_id,
            GRAPPE_JOB_NAME=launch.name,
            GRAPPE_PROJECT=launch.project,
            GRAPPE_ATTEMPT=str(launch.attempt),
            GRAPPE_SITE=self.site.name,
            GRAPPE_POOL=launch.pool,
        )
        return env

    def _stage(self, launch: Launch, stage: Path) -> None:
        """Unpack the archive and write the job script; ``SubmitRejected`` when unsafe."""
        shutil.rmtree(stage, ignore_errors=True)  # left by a submit that died halfway
        try:
            stage.mkdir(parents=True)
        except OSError as exc:
            raise SiteUnavailable(f"cannot stage {stage}: {exc}") from exc
        if launch.workdir_archive is not None:
            archive = Path(launch.workdir_archive)
            try:
                with tarfile.open(archive, "r:*") as tar:
                    # The "data" filter refuses members and links that would land outside.
                    tar.extractall(stage, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise SubmitRejected(f"workdir archive {archive.name} refused: {exc}") from exc
        script = stage / SCRIPT
        if script.parent.exists():
            raise SubmitRejected(f"the workdir holds {script.parent.name}/, a name Grappe keeps")
        env = self._env(launch)
        if not launch.resources.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""  # empty, not unset: no GPU of the node
        exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        shebang, body = job_script(launch.job_id, launch.attempt, launch.setup, launch.run).split(
            "\n", 1
        )
        script.parent.mkdir()
        script.write_text("\n".join([shebang, *exports, body]))

    def _check_fits(self, launch: Launch) -> None:
        if not _JOB_ID_RE.match(launch.job_id) or launch.attempt < 0:
            raise SubmitRejected(f"job id {launch.job_id!r} cannot name a Ray submission")
        single_node_pool(self.site, launch, "a Ray job's entrypoint runs on one; use Ray tasks")

    def _pool_for(self, has_gpus: bool) -> str:
        """One pool: the whole cluster; two: nodes with GPUs go to the pool with GPUs."""
        pools = self.site.pools
        return (
            pools[0].name
            if len(pools) == 1
            else next(p.name for p in pools if bool(p.gpus_per_node) == has_gpus)
        )

    def _pool_capacities(self, nodes: dict[str, Any], jobs: list[Any]) -> tuple[PoolCapacity, ...]:
        tallies = {p.name: _Tally() for p in self.site.pools}
        for usage in nodes.values():  # {resource: [used, total]}
            node = tallies[self._pool_for(_amount(usage, "GPU", 1) > 0)]
            for k in _RESOURCES:
                node.used[k] += _amount(usage, k, 0)
                node.total[k] += _amount(usage, k, 1)
            node.idle_nodes += not (_amount(usage, "CPU", 0) or _amount(usage, "GPU", 0))
        now = time.time()
        for job in jobs:
            if job.status not in ("PENDING", "RUNNING"):
                continue
            meta = job.metadata or {}
            t = tallies.get(meta.get("grappe_pool", ""))
            if t is None:  # not Grappe's: Ray's report counts it
                continue
            cpus, gpus = float(meta.get("grappe_cpus", 0)), float(meta.get("grappe_gpus", 0))
            t.held["CPU"] += cpus
            t.held["GPU"] += gpus
            t.held["memory"] += float(meta.get("grappe_memory_bytes", 0))
            t.active_jobs += 1
            limit = float(meta.get("grappe_max_runtime_s") or 0)
            if job.status == "PENDING":
                t.ahead[0] += gpus * limit
                t.ahead[2] += cpus * limit
            else:
                left = max(0.0, limit - (now - (job.start_time or 0) / 1000))
                t.ahead[1] += gpus * left
                t.ahead[3] += cpus * left
        return tuple(t.capacity(name) for name, t in tallies.items())


@dataclass
class _Tally:
    """One pool: its nodes' resources, and what the active jobs there hold or will."""

    used: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    total: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    held: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    idle_nodes: int = 0
    active_jobs: int = 0
    ahead: list[float] = field(default_factory=lambda: [0.0] * 4)  # GPU s: pending, left; CPU s

    def capacity(self, pool: str) -> PoolCapacity:
        """Free as Ray's report says, less the jobs it has not counted yet (it lags ~5 s)."""

        def free(k: str) -> int:
            return int(max(0.0, min(self.total[k] - self.used[k], self.total[k] - self.held[k])))

        return PoolCapacity(
            pool=pool,
            free_gpus=free("GPU"),
            free_cpus=free("CPU"),
            free_memory_bytes=free("memory"),
            free_nodes=max(0, self.idle_nodes - self.active_jobs),
            pending_gpu_seconds=self.ahead[0],
            running_gpu_seconds_left=self.ahead[1],
            pending_cpu_seconds=self.ahead[2],
            running_cpu_seconds_left=self.ahead[3],
        )


def _amount(usage: dict[str, list[float]], resource: str, index: int) -> float:
    """``used`` (index 0) or ``total`` (1) of a resource in Ray's per-node usage."""
    return float((usage.get(resource) or [0.0, 0.0])[index])


def _message(error: Exception | str) -> str:
    """Ray's own words in an error: the last ``...Error: text`` of a traceback, else the start."""
    found = _ERROR_LINE_RE.findall(str(error))
    return (found[-1] if found else str(error)).strip()[:2000]


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _status(info: Any) -> Status:
    """Grappe's view of Ray's ``JobDetails`` (``None``: Ray does not know the job)."""
    if info is None:
        return Status(JobState.FAILED, UNKNOWN)
    started, ended = _time(info.start_time), _time(info.end_time)
    status = str(getattr(info.status, "value", info.status))
    if status == "PENDING":
        return Status(JobState.SUBMITTED)
    if status == "RUNNING":
        return Status(JobState.RUNNING, started_at=started)
    if status == "SUCCEEDED":
        return Status(JobState.SUCCEEDED, exit_code=0, started_at=started, ended_at=ended)
    if status == "STOPPED":
        return Status(JobState.CANCELLED, "cancelled", started_at=started, ended_at=ended)
    code = getattr(info, "driver_exit_code", None)
    if code is None and str(info.error_type or "").endswith("COMMAND_ERROR"):
        found = _EXIT_RE.search(info.message or "")  # Ray before driver_exit_code
        code = int(found.group(1)) if found else None
    if code is None:
        return Status(JobState.FAILED, _message(info.message or "failed in Ray"))
    limit = int((info.metadata or {}).get("grappe_max_runtime_s", 0) or 0)
    ran = (ended - started).total_seconds() if started and ended else 0.0
    # 124: timeout's TERM ended the job; 137: its SIGKILL did. Either only past the limit.
    if code in (124, 137) and limit and ran >= limit:
        return Status(JobState.TIMEOUT, f"exceeded max_runtime {limit}s", None, started, ended)
    if code < 0:
        reason = f"killed by signal {_signal_name(-code)}"
    else:
        reason = f"exit code {code}"
        if code > 128 and _signal_name(code - 128) != str(code - 128):
            reason += f" (likely a command killed by signal {_signal_name(code - 128)})"
    return Status(JobState.FAILED, reason, code, started, ended)
