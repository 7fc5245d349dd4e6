"""What a replay reports: one record per trace job, and the run's outcome and counters."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JobRecord:
    """What happened to one trace job in a replay (times in virtual seconds)."""

    job_id: str
    group: str
    num_gpus: int
    submit_s: float
    duration_s: float  # as the trace recorded it, on the reference (or requested) GPU
    start_s: float | None = None
    end_s: float | None = None
    site: str | None = None
    pool: str | None = None
    gpu_model: str | None = None
    user: str | None = None
    ran_s: float = 0.0  # time spent running, over all its runs (a stopped job runs again)
    preemptions: int = 0


@dataclass
class SimResult:
    """A replay's outcome: one record per accepted job, the rejected ones, and counters."""

    policy: str
    records: list[JobRecord]
    rejected: list[tuple[str, str]]  # (job_id, why no site can ever hold it)
    total_gpus: int
    violations: int
    wall_s: float
    decide_calls: int
    time_scale: float = 1.0  # factor applied to submission times by ``load``
    unfinished: int = 0  # jobs still pending when no event was left (should be 0)
    violation_notes: list[str] = field(default_factory=list)
    # (time, jobs waiting, GPUs busy) after each instant with events, for the report's plots.
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
