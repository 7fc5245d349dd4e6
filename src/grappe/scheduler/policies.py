"""Queue policies: in which order pending jobs are considered, and whether later jobs may pass.

A policy is named and pluggable (``GRAPPE_POLICY``); baselines live beside the
real one so that benchmarks compare like with like. Every policy runs through
the one scheduling pass (``decide``); a policy only says:

- ``order``: the order in which the pass walks the pending jobs;
- ``backfill``: whether a later job may start while an earlier one waits;
- ``hold``: what a waiting job keeps from later ones: ``"pool"`` (the free
  capacity of the pool it waits for), ``"easy"`` (a reservation at the earliest
  time enough GPUs free up, as EASY backfill: later jobs start only if they end
  before it or use GPUs it does not need) or ``"none"`` (nothing: work-conserving);
- ``preempts`` and ``tier``: whether a waiting job may stop running preemptible
  jobs of a higher tier (a lower priority) to start; ``shielded``: whether a job,
  as it starts, may no longer be stopped.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

Hold = Literal["pool", "easy", "none"]

# Tiresias' discretised LAS: queues by attained GPU-service, in GPU-seconds. A job that
# has had less than 1 GPU-hour is in queue 0, less than 10 GPU-hours in queue 1.
LAS_THRESHOLDS_GPU_S: tuple[float, ...] = (3600.0, 36000.0)


@dataclass(frozen=True)
class QueuedJob:
    """A pending (or running) job with what ordering needs to know about it and its project."""

    job_id: int
    submitted_at: datetime
    project: str
    project_priority: int
    share_used: float  # fraction of the project's allocation used (fair share)
    gpus: int = 0
    attained_gpu_s: float = 0.0  # service already received (a job stopped and resumed)
    predicted_s: float = 0.0  # predicted run time from history; 0 when unknown
    # Expected run time still to go relative to a new job's (``RuntimePredictor.aging``).
    aging: float = 1.0


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def backfill(self) -> bool:
        """May a later job start while an earlier one waits? Without it the queue is strict."""
        ...

    @property
    def hold(self) -> Hold:
        """What a waiting job keeps from the jobs after it (see the module's docstring)."""
        ...

    @property
    def preempts(self) -> bool:
        """May a waiting job stop running preemptible jobs of a higher ``tier``?"""
        ...

    def tier(self, job: QueuedJob) -> int:
        """The job's priority class for preemption: a lower tier may stop a higher one."""
        ...

    def shielded(self, job: QueuedJob, now: datetime) -> bool:
        """Whether the job, (re)started at ``now``, may not be stopped until it ends."""
        ...

    def order(self, jobs: Sequence[QueuedJob], now: datetime | None = None) -> list[QueuedJob]: ...


@runtime_checkable
class KeyedPolicy(Policy, Protocol):
    """A policy whose ``order`` sorts by a per-job key, so a caller may keep its queue sorted.

    The built-in policies are keyed; trace replay then sorts each job once on arrival and
    again only when its key changes, instead of the whole queue at every pass.
    """

    def key(self, job: QueuedJob, now: datetime | None = None) -> tuple[Any, ...]:
        """The job's sort key in ``order`` (jobs sort by it, lowest first)."""
        ...

    def key_changes_at(self, job: QueuedJob, now: datetime | None = None) -> datetime | None:
        """When the key of ``job`` next changes while it waits (other than by its project's
        share), after ``now``; ``None`` if never. A caller keeping its queue sorted re-keys
        the job then."""
        ...


def _share(job: QueuedJob, step: float) -> int:
    share = job.share_used if job.share_used != float("inf") else 1e9
    return int(share / step)


def las_queue(attained_gpu_s: float, thresholds: Sequence[float] = LAS_THRESHOLDS_GPU_S) -> int:
    """The LAS queue of a job that has received ``attained_gpu_s`` GPU-seconds (0 first).

    ``thresholds`` go up: the queue is how many of them the job has reached.
    """
    return bisect.bisect_right(thresholds, attained_gpu_s)


@dataclass(frozen=True)
class Fifo:
    """Strict arrival order: the first job that cannot start blocks the rest."""

    name: str = "fifo"
    backfill: bool = False
    hold: Hold = "pool"
    preempts: bool = False

    def tier(self, job: QueuedJob) -> int:
        return 0

    def shielded(self, job: QueuedJob, now: datetime) -> bool:
        return False

    def key(self, job: QueuedJob, now: datetime | None = None) -> tuple[Any, ...]:
        return (job.submitted_at, job.job_id)

    def key_changes_at(self, job: QueuedJob, now: datetime | None = None) -> datetime | None:
        return None

    def order(self, jobs: Sequence[QueuedJob], now: datetime | None = None) -> list[QueuedJob]:
        return sorted(jobs, key=self.key)


@dataclass(frozen=True)
class FairShare:
    """Project priority, then fair share, then age; later jobs may pass.

    Fair share puts first the projects that have used the smallest part of their
    allocation (in steps of 5%, so that age still orders near-equal projects).
    With ``hold="pool"`` a job that waits keeps the free capacity of the pool it
    waits for, so smaller jobs passing it cannot starve it; with ``hold="easy"``
    this is Slurm's priority with EASY backfill on requested runtimes.
    """

    name: str = "fairshare"
    backfill: bool = True
    share_step: float = 0.05
    hold: Hold = "pool"
    preempts: bool = False

    def tier(self, job: QueuedJob) -> int:
        return 0

    def shielded(self, job: QueuedJob, now: datetime) -> bool:
        return False

    def key(self, job: QueuedJob, now: datetime | None = None) -> tuple[Any, ...]:
        return (-job.project_priority, _share(job, self.share_step), job.submitted_at, job.job_id)

    def key_changes_at(self, job: QueuedJob, now: datetime | None = None) -> datetime | None:
        return None

    def order(self, jobs: Sequence[QueuedJob], now: datetime | None = None) -> list[QueuedJob]:
        return sorted(jobs, key=self.key)


@dataclass(frozen=True)
class Las:
    """Tiresias' discretised least-attained-service: queues by GPU-service received.

    Jobs that have had the least GPU-time go first (arrival order within a queue), so
    short jobs finish early without knowing any runtime; a waiting job stops running
    preemptible jobs of a later queue. Work-conserving: any job that fits starts.
    """

    name: str = "las"
    backfill: bool = True
    hold: Hold = "none"
    preempts: bool = True
    thresholds: tuple[float, ...] = LAS_THRESHOLDS_GPU_S

    def tier(self, job: QueuedJob) -> int:
        return las_queue(job.attained_gpu_s, self.thresholds)

    def shielded(self, job: QueuedJob, now: datetime) -> bool:
        return False

    def key(self, job: QueuedJob, now: datetime | None = None) -> tuple[Any, ...]:
        return (self.tier(job), job.submitted_at, job.job_id)

    def key_changes_at(self, job: QueuedJob, now: datetime | None = None) -> datetime | None:
        return None  # a waiting job receives no service: its queue stays

    def order(self, jobs: Sequence[QueuedJob], now: datetime | None = None) -> list[QueuedJob]:
        return sorted(jobs, key=self.key)


@dataclass(frozen=True)
class Grappe:
    """Grappe's policy: what the traces teach, through the same pass as the baselines.

    Order: project priority; then jobs that have waited more than ``starve_factor``
    times their predicted runtime, or than that many times what they have run if
    they outran it (oldest first: no job starves); then fair share
    against allocations; then the LAS queue (GPU-service already received); then
    age. (Not the smallest predicted work: where runtimes are alike, that passes
    wide jobs over until they starve; docs/scheduling.md.) A waiting job
    holds an EASY reservation, and may stop preemptible jobs of a later LAS queue;
    a job that starved before it started is not stopped again, nor one expected to
    have less left to run than a new job of its shape (``QueuedJob.aging``).
    """

    name: str = "grappe"
    backfill: bool = True
    share_step: float = 0.05
    hold: Hold = "easy"
    preempts: bool = True
    starve_factor: float = 20.0
    thresholds: tuple[float, ...] = LAS_THRESHOLDS_GPU_S

    def tier(self, job: QueuedJob) -> int:
        return las_queue(job.attained_gpu_s, self.thresholds)

    def shielded(self, job: QueuedJob, now: datetime) -> bool:
        """A job that starved before it started runs to its end: otherwise the next new
        job of a lower LAS queue could stop it again, and its wait would have no bound.

        So does a job expected to have less left to run than a new job of its shape
        (``aging`` below 1, as when runtimes are light-tailed): stopping it for a new
        job would delay the job nearer its end."""
        return self.starving(job, now) or job.aging < 1.0

    def _ran_s(self, job: QueuedJob) -> float:
        return job.attained_gpu_s / job.gpus if job.gpus else 0.0

    def _bound_s(self, job: QueuedJob) -> float:
        """How long ``job`` may wait before it starves: ``starve_factor`` x its predicted
        runtime, or x what it has run if it outran that. So the bound is on its slowdown
        against the longer of its prediction and its real runtime, as Tiresias's bound
        grows with a job's run: a long job mispredicted short, stopped for shorter ones,
        does not starve at once and take back GPUs for days (docs/scheduling.md)."""
        return self.starve_factor * max(job.predicted_s, self._ran_s(job))

    def starving(self, job: QueuedJob, now: datetime | None) -> bool:
        """Whether ``job`` has waited (not run) longer than its bound (``_bound_s``) since
        it was submitted."""
        if now is None or job.predicted_s <= 0:
            return False
        waited = (now - job.submitted_at).total_seconds() - self._ran_s(job)
        return waited > self._bound_s(job)

    def key(self, job: QueuedJob, now: datetime | None = None) -> tuple[Any, ...]:
        if self.starving(job, now):
            # Starving jobs first, oldest first, ahead of shares and tiers.
            head = (0, job.submitted_at, 0, 0)
        else:
            head = (1, None, _share(job, self.share_step), self.tier(job))
        return (-job.project_priority, *head, job.submitted_at, job.job_id)

    def key_changes_at(self, job: QueuedJob, now: datetime | None = None) -> datetime | None:
        """When ``job`` starts starving (its key moves ahead), if it has a prediction."""
        if job.predicted_s <= 0 or self.starving(job, now):
            return None
        return job.submitted_at + timedelta(seconds=self._bound_s(job) + self._ran_s(job))

    def order(self, jobs: Sequence[QueuedJob], now: datetime | None = None) -> list[QueuedJob]:
        return sorted(jobs, key=lambda j: self.key(j, now))


POLICIES: dict[str, Policy] = {
    "grappe": Grappe(),
    "fifo": Fifo(),
    "backfill": FairShare(name="backfill", hold="easy"),
    "las": Las(),
}


def policy(name: str) -> Policy:
    """The policy called ``name``; ``ValueError`` names the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(
            f"policy {name!r} is not known; use one of {', '.join(POLICIES)}"
        ) from None
