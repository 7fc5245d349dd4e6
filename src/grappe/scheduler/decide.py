"""One scheduling pass as a pure function: which pending jobs start where, and why others wait.

The live loop (``loop.Scheduler``) and trace replay both call ``decide``: the
loop with jobs read from the store and snapshots from the sites' engines, a
replay with its own in-memory queue and simulated sites. Starting a job is
the caller's ``start`` callback, so the pass goes on with the capacity that
really was taken (a site may refuse a job the snapshot said it could hold).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from grappe.domain.jobs import JobRequest
from grappe.domain.resources import format_duration
from grappe.domain.sites import GpuModel, SiteSnapshot
from grappe.placement import Candidate, Placement, place
from grappe.placement.filters import POOL_FILTERS, SITE_FILTERS
from grappe.scheduler.policies import Policy, QueuedJob


@dataclass(frozen=True)
class Entry:
    """A pending job as a pass sees it: its place in the queue, its request, and any hold."""

    queued: QueuedJob
    request: JobRequest
    held: str | None = None  # why its project may not start work now (allocation)


@dataclass
class Pass:
    """What one pass did: jobs started, and why each other job waits."""

    started: list[tuple[Entry, Candidate, Placement]] = field(default_factory=list)
    waiting: list[tuple[Entry, str, Placement | None]] = field(default_factory=list)
    held: int = 0


def waiting_reason(c: Candidate, resources: str) -> str:
    return (
        f"waiting for {resources} on {c.site}/{c.pool}, its best site "
        f"(estimated wait {format_duration(c.wait_s)})"
    )


def _free_gpus(snapshots: Mapping[str, SiteSnapshot]) -> bool:
    """Whether any pool of an answering site still has a free GPU."""
    return any(
        cap.free_gpus > 0 for snap in snapshots.values() if snap.available for cap in snap.pools
    )


def _slack(entries: Sequence[Entry], snapshots: Mapping[str, SiteSnapshot]) -> bool:
    """Whether every pool has the CPUs and memory of all entries together free.

    Then no reservation of CPUs or memory in this pass can keep a later job from starting.
    """
    cpus = sum(e.request.resources.cpus for e in entries)
    memory = sum(e.request.resources.memory_bytes for e in entries)
    return all(
        cap.free_cpus >= cpus and cap.free_memory_bytes >= memory
        for snap in snapshots.values()
        for cap in snap.pools
    )


def _any_free_gpu(
    job: JobRequest,
    live: Mapping[str, SiteSnapshot],
    pools_for: dict[tuple[object, ...], list[tuple[str, str]]],
) -> bool:
    """Whether a pool that may run ``job`` (the placement filters pass) has a free GPU."""
    # The filters read neither the job's runtime nor its live capacity: jobs alike share them.
    key = (
        job.resources,
        job.jurisdiction,
        job.certifications,
        job.sites_allow,
        job.sites_deny,
        job.max_price_eur_gpu_hour,
        job.site_accounts,
    )
    keys = pools_for.get(key)
    if keys is None:
        keys = []
        for snap in live.values():
            if any(f(job, snap) for f in SITE_FILTERS):
                continue
            keys += [
                (snap.site.name, pool.name)
                for pool in snap.site.pools
                if not any(f(job, snap.site, pool) for f in POOL_FILTERS)
            ]
        pools_for[key] = keys
    for site, pool in keys:
        cap = live[site].capacity(pool)
        if cap is not None and cap.free_gpus > 0:
            return True
    return False


def decide(
    entries: Sequence[Entry],
    snapshots: Mapping[str, SiteSnapshot],
    policy: Policy,
    gpus: Mapping[str, GpuModel],
    start: Callable[[Entry, Candidate, Placement], bool],
) -> Pass:
    """Walk ``entries`` in policy order and start each job whose best candidate can start now.

    ``start`` releases a job to its candidate and says whether the site took it. A job
    whose best candidate must wait keeps that pool's free capacity for the rest of the
    pass (so that later, smaller jobs cannot starve it); with a strict policy it also
    stops the pass.
    """
    live = dict(snapshots)
    result = Pass()
    by_id = {e.queued.job_id: e for e in entries}
    gpus_free = _free_gpus(live)
    # CPU-only jobs still to walk: while any remain, every GPU job's reservation matters.
    cpu_left = sum(1 for e in entries if not e.held and not e.request.resources.gpus)
    slack = _slack(entries, live)
    pools_for: dict[tuple[object, ...], list[tuple[str, str]]] = {}
    for queued in policy.order([e.queued for e in entries]):
        entry = by_id[queued.job_id]
        if entry.held:
            result.held += 1
            result.waiting.append((entry, f"held: {entry.held}", None))
            continue
        res = entry.request.resources
        if not res.gpus:
            cpu_left -= 1
        elif policy.backfill and not gpus_free and not cpu_left:
            # No pool has a free GPU and no CPU job follows: it can only wait; its reason stands.
            continue
        elif policy.backfill and slack and not _any_free_gpu(entry.request, live, pools_for):
            # It can only wait, and its reservation would take no GPU and (with CPUs and
            # memory to spare for the whole pass) change no later decision: its reason stands.
            continue
        placement = place(entry.request, list(live.values()), gpus)
        best = placement.best
        if best is None:
            result.waiting.append((entry, placement.summary(), placement))
            if not policy.backfill:
                break
            continue
        snap = live[best.site]
        if best.can_start_now:
            if start(entry, best, placement):
                result.started.append((entry, best, placement))
                live[best.site] = snap.taking(best.pool, res.gpus, res.cpus, res.memory_bytes)
                gpus_free = gpus_free and _free_gpus(live)
            continue
        result.waiting.append((entry, waiting_reason(best, res.describe()), placement))
        if not policy.backfill:
            break
        cap = snap.capacity(best.pool)
        if cap is not None:
            live[best.site] = snap.taking(
                best.pool,
                min(res.gpus, max(cap.free_gpus, 0)),
                min(res.cpus, max(cap.free_cpus, 0)),
                min(res.memory_bytes, max(cap.free_memory_bytes, 0)),
            )
            gpus_free = gpus_free and _free_gpus(live)
    return result
