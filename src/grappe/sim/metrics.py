"""Figures of a replay: completion times, queueing delays, utilisation, fairness.

Standard library only (NumPy is not a dependency of Grappe).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from grappe.sim.records import JobRecord, SimResult

KEYS = (
    "policy",
    "jobs",
    "avg_jct_s",
    "p50_jct_s",
    "p99_jct_s",
    "avg_wait_s",
    "p99_wait_s",
    "makespan_s",
    "utilization",
    "jain_fairness",
    "violations",
    "wall_s",
    "decisions_per_s",
)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index of ``values``: 1.0 when all are equal, 1/n at worst."""
    if not values:
        return 1.0
    square = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * square) if square > 0 else 1.0


def ran(rec: JobRecord) -> float:
    """How long a finished job ran, over all its runs (a preempted job runs more than once)."""
    assert rec.start_s is not None and rec.end_s is not None
    return rec.ran_s or rec.end_s - rec.start_s


def slowdown(rec: JobRecord) -> float:
    """JCT over the job's run time (1.0: it never waited); runs under 1 s count as 1 s."""
    assert rec.start_s is not None and rec.end_s is not None
    return (rec.end_s - rec.submit_s) / max(ran(rec), 1.0)


def summarise(result: SimResult) -> dict[str, Any]:
    """One policy's figures as a dict with at least the keys of ``KEYS``.

    ``jain_fairness`` is Jain's index across groups (virtual cluster, else user) of each
    group's average slowdown (JCT over run time): 1.0 when every group waits alike.
    ``decisions_per_s`` is jobs started per second of replay wall time;
    ``decide_calls_per_s`` counts scheduling passes instead.
    """
    done = [r for r in result.records if r.end_s is not None and r.start_s is not None]
    jct = [r.end_s - r.submit_s for r in done]  # type: ignore[operator]
    # Queueing delay: all the time a job did not run, before its start and while stopped.
    wait = [j - ran(r) for j, r in zip(jct, done, strict=True)]
    makespan = 0.0
    if done:
        makespan = max(r.end_s for r in done) - min(r.submit_s for r in done)  # type: ignore[type-var]
    gpu_s = sum(r.num_gpus * ran(r) for r in done)
    per_group: dict[str, list[float]] = defaultdict(list)
    for r in done:
        per_group[r.group].append(slowdown(r))
    wall = max(result.wall_s, 1e-9)
    return {
        "policy": result.policy,
        "jobs": len(done),
        "avg_jct_s": sum(jct) / len(jct) if jct else 0.0,
        "p50_jct_s": percentile(jct, 50),
        "p99_jct_s": percentile(jct, 99),
        "avg_wait_s": sum(wait) / len(wait) if wait else 0.0,
        "p99_wait_s": percentile(wait, 99),
        "makespan_s": makespan,
        "utilization": gpu_s / (result.total_gpus * makespan) if makespan > 0 else 0.0,
        "jain_fairness": jain([sum(v) / len(v) for v in per_group.values()]),
        "violations": result.violations,
        "wall_s": result.wall_s,
        "decisions_per_s": len(done) / wall,
        "decide_calls": result.decide_calls,
        "decide_calls_per_s": result.decide_calls / wall,
        "rejected": len(result.rejected),
        "unfinished": result.unfinished,
        "groups": len(per_group),
        "time_scale": result.time_scale,
        "preemptions": sum(r.preemptions for r in result.records),
    }
