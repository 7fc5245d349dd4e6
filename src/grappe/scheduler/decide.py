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
    for queued in policy.order([e.queued for e in entries]):
        entry = by_id[queued.job_id]
        if entry.held:
            result.held += 1
            result.waiting.append((entry, f"held: {entry.held}", None))
            continue
        res = entry.request.resources
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
    return result
