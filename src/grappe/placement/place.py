"""Rank the sites and pools that may run a job; explain every one that may not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from grappe.catalog import REFERENCE_GPU
from grappe.domain.accounting import charge
from grappe.domain.datasets import staging_seconds
from grappe.domain.jobs import JobRequest
from grappe.domain.sites import GpuModel, Pool, PoolCapacity, SiteSnapshot
from grappe.placement.filters import POOL_FILTERS, SITE_FILTERS, session

# Weights of (completion time, cost, carbon) for each objective.
OBJECTIVE_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "time": (0.7, 0.2, 0.1),
    "cost": (0.2, 0.7, 0.1),
    "carbon": (0.2, 0.1, 0.7),
}


@dataclass(frozen=True)
class Rejection:
    site: str
    pool: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "pool": self.pool, "reason": self.reason}


@dataclass(frozen=True)
class Candidate:
    """One place the job may run, with its estimates and score (lower is better)."""

    site: str
    pool: str
    gpu_model: str | None
    can_start_now: bool
    wait_s: float
    runtime_s: float
    completion_s: float
    cost_eur: float
    kg_co2: float
    score: float = 0.0
    breakdown: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Time to bring the job's datasets to the site (zero where copies live), in completion_s.
    staging_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "pool": self.pool,
            "gpu_model": self.gpu_model,
            "can_start_now": self.can_start_now,
            "wait_s": round(self.wait_s, 1),
            "runtime_s": round(self.runtime_s, 1),
            "completion_s": round(self.completion_s, 1),
            "staging_s": round(self.staging_s, 1),
            "cost_eur": round(self.cost_eur, 4),
            "kg_co2": round(self.kg_co2, 7),
            "score": round(self.score, 4),
            "breakdown": {k: dict(v) for k, v in self.breakdown.items()},
        }


@dataclass(frozen=True)
class Placement:
    objective: str
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def summary(self) -> str:
        """One line: where it goes, or why nowhere."""
        if self.best:
            b = self.best
            when = "now" if b.can_start_now else f"in about {b.wait_s:.0f}s"
            return f"best: {b.site}/{b.pool}, can start {when}"
        if not self.rejected:
            return "no site is declared"
        return "no site can run this job: " + "; ".join(
            f"{r.site}{'/' + r.pool if r.pool else ''}: {r.reason}" for r in self.rejected
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "candidates": [c.as_dict() for c in self.candidates],
            "rejected": [r.as_dict() for r in self.rejected],
            "summary": self.summary(),
        }


def fits_now(job: JobRequest, cap: PoolCapacity) -> bool:
    r = job.resources
    return (
        cap.free_gpus >= r.gpus
        and cap.free_cpus >= r.cpus
        and cap.free_memory_bytes >= r.memory_bytes
    )


def _speed(gpus: Mapping[str, GpuModel], model: str | None) -> float:
    known = gpus.get(model or "")
    return known.relative_speed if known else 1.0


def _estimate(
    job: JobRequest,
    snap: SiteSnapshot,
    pool: Pool,
    cap: PoolCapacity,
    gpus: Mapping[str, GpuModel],
) -> Candidate:
    r = job.resources
    runtime = float(job.max_runtime_s)
    if r.gpus:
        # max_runtime is read as written for the model asked for (or the reference GPU).
        runtime *= _speed(gpus, r.gpu_model or REFERENCE_GPU) / _speed(gpus, pool.gpu_model)
    now = fits_now(job, cap)
    if now:
        wait = 0.0
    else:
        if r.gpus:
            ahead = cap.pending_gpu_seconds + cap.running_gpu_seconds_left
            wait = ahead / max(pool.total_gpus, 1)
        else:
            ahead = cap.pending_cpu_seconds + cap.running_cpu_seconds_left
            wait = ahead / max(pool.total_cpus, 1)
        if ahead <= 0:
            # No room, yet no known work ahead (others' jobs, a site we see little of):
            # assume one job of this length must end first rather than no wait at all.
            wait = runtime
    staging = staging_seconds(job.inputs, snap.site.name, snap.site.bandwidth_bytes_s)
    shots = job.quantum.shots if job.quantum else 0
    cost = charge(r, snap.site, pool, runtime, gpus.get(pool.gpu_model or ""), shots)
    return Candidate(
        site=snap.site.name,
        pool=pool.name,
        gpu_model=pool.gpu_model,
        can_start_now=now,
        wait_s=wait,
        runtime_s=runtime,
        completion_s=wait + staging + runtime,
        cost_eur=cost.eur,
        kg_co2=cost.kg_co2,
        staging_s=staging,
    )


def _normalise(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12:
        return [0.0 for _ in values]
    return [(v - lo) / (hi - lo) for v in values]


def _rank(objective: str, found: list[Candidate], explain: bool = True) -> tuple[Candidate, ...]:
    """The candidates scored and best first; ``explain`` adds each one's score breakdown."""
    if not found:
        return ()
    weights = OBJECTIVE_WEIGHTS[objective]
    metrics = {
        "completion_s": [c.completion_s for c in found],
        "cost_eur": [c.cost_eur for c in found],
        "kg_co2": [c.kg_co2 for c in found],
    }
    normalised = {name: _normalise(values) for name, values in metrics.items()}
    ranked = []
    for i, cand in enumerate(found):
        breakdown = {}
        score = 0.0
        for (name, values), weight in zip(metrics.items(), weights, strict=True):
            part = weight * normalised[name][i]
            score += part
            if explain:
                breakdown[name] = {
                    "value": round(values[i], 5),
                    "normalised": round(normalised[name][i], 4),
                    "weight": weight,
                    "points": round(part, 4),
                }
        ranked.append(replace(cand, score=score, breakdown=breakdown))
    ranked.sort(key=lambda c: (round(c.score, 9), not c.can_start_now, c.site, c.pool))
    return tuple(ranked)


def place(
    job: JobRequest,
    snapshots: Sequence[SiteSnapshot],
    gpus: Mapping[str, GpuModel],
    within: Sequence[tuple[str, str]] | None = None,
) -> Placement:
    """Every (site, pool) that may run ``job``, best first, and every one that may not, with why.

    ``within`` lists the (site, pool) pairs that a caller has already seen pass the filters
    for this request: only those are weighed, and the placement then lists no rejections
    and no score breakdowns (a trace replay, which shows neither, calls it that way).
    """
    if job.objective not in OBJECTIVE_WEIGHTS:
        raise ValueError(f"objective {job.objective!r} is not one of {list(OBJECTIVE_WEIGHTS)}")
    found: list[Candidate] = []
    rejected: list[Rejection] = []
    if within is not None:
        by_name = {snap.site.name: snap for snap in snapshots}
        for site, name in within:
            snap = by_name[site]
            pool, cap = snap.site.pool(name), snap.capacity(name)
            if pool is not None and cap is not None and session(job, pool, cap) is None:
                found.append(_estimate(job, snap, pool, cap, gpus))
        return Placement(job.objective, _rank(job.objective, found, explain=False), ())
    for snap in snapshots:
        reason = next((why for f in SITE_FILTERS if (why := f(job, snap))), None)
        if reason:
            rejected.append(Rejection(snap.site.name, None, reason))
            continue
        for pool in snap.site.pools:
            why = next((w for f in POOL_FILTERS if (w := f(job, snap.site, pool))), None)
            cap = snap.capacity(pool.name)
            if why is None and cap is None:
                why = f"pool {pool.name} reported no capacity"
            if why is None and cap is not None:
                why = session(job, pool, cap)
            if why:
                rejected.append(Rejection(snap.site.name, pool.name, why))
                continue
            assert cap is not None
            found.append(_estimate(job, snap, pool, cap, gpus))
    return Placement(job.objective, _rank(job.objective, found), tuple(rejected))
