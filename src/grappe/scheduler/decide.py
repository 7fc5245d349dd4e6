"""One scheduling pass as a pure function: which pending jobs start where, and why others wait.

The live loop (``loop.Scheduler``) and trace replay both call ``decide``: the
loop with jobs read from the store and snapshots from the sites' engines, a
replay with its own in-memory queue and simulated sites. Starting a job is
the caller's ``start`` callback, so the pass goes on with the capacity that
really was taken (a site may refuse a job the snapshot said it could hold).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from grappe.catalog import REFERENCE_GPU
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import format_duration
from grappe.domain.sites import GpuModel, PoolCapacity, SiteSnapshot
from grappe.placement import Candidate, Placement, place
from grappe.placement.place import fits_now
from grappe.scheduler.lookups import PoolMemo, Stoppable, most_free_gpus
from grappe.scheduler.policies import Policy, QueuedJob


@dataclass(frozen=True)
class Entry:
    """A pending job as a pass sees it: its place in the queue, its request, and any hold."""

    queued: QueuedJob
    request: JobRequest
    held: str | None = None  # why its project may not start work now (allocation)


@dataclass(frozen=True)
class Running:
    """A running job that a pass may stop (preempt) for a more urgent one."""

    queued: QueuedJob
    request: JobRequest
    site: str
    pool: str
    tier: int = 0  # the policy's tier of the job now (``Policy.tier``)


@dataclass
class Pass:
    """What one pass did: jobs started, jobs stopped for them, and why each other job waits."""

    started: list[tuple[Entry, Candidate, Placement]] = field(default_factory=list)
    waiting: list[tuple[Entry, str, Placement | None]] = field(default_factory=list)
    preempted: list[Running] = field(default_factory=list)
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
    The sums only grow: the walk stops at the first entry that outgrows the smallest pool.
    """
    caps = [cap for snap in snapshots.values() for cap in snap.pools]
    if not caps:
        return True
    cpus_room = min(cap.free_cpus for cap in caps)
    memory_room = min(cap.free_memory_bytes for cap in caps)
    if cpus_room < 0 or memory_room < 0:
        return False
    cpus = memory = 0
    for e in entries:
        res = e.request.resources
        cpus += res.cpus
        memory += res.memory_bytes
        if cpus > cpus_room or memory > memory_room:
            return False
    return True


def _kept_from(
    entry: Entry,
    pools: Sequence[tuple[str, str]],
    reserved: Mapping[tuple[str, str], list[float]],
    caps: Mapping[tuple[str, str], PoolCapacity],
    speeds: Mapping[tuple[str, str], float],
    gpus: Mapping[str, GpuModel],
) -> bool:
    """Whether every pool that may run ``entry`` is reserved, and too full for it now or kept
    for the earlier job it would delay.

    ``speeds`` gives each pool's relative GPU speed. Then the job can neither start nor
    reserve anything in this pass: placing it is moot.
    """
    res = entry.request.resources
    base = entry.queued.predicted_s or float(entry.request.max_runtime_s)
    ref = gpus.get(res.gpu_model or REFERENCE_GPU)
    ref_speed = ref.relative_speed if ref else 1.0
    for key in pools:
        held = reserved.get(key)
        if held is None or res.gpus <= held[1]:
            return False
        cap = caps.get(key)
        if cap is None or cap.free_gpus < res.gpus:
            continue
        if cap.as_of + base * (ref_speed / speeds[key]) <= held[0]:
            return False
    return True


def _runtime(entry: Entry, cand: Candidate) -> float:
    """How long the job is expected to hold ``cand``: its prediction if any, else its request."""
    predicted = entry.queued.predicted_s
    if predicted > 0 and entry.request.max_runtime_s > 0:
        return predicted * cand.runtime_s / entry.request.max_runtime_s
    return cand.runtime_s


def decide(
    entries: Sequence[Entry],
    snapshots: Mapping[str, SiteSnapshot],
    policy: Policy,
    gpus: Mapping[str, GpuModel],
    start: Callable[[Entry, Candidate, Placement], bool],
    now: datetime | None = None,
    running: Sequence[Running] = (),
    preempt: Callable[[Running], bool] | None = None,
    ordered: bool = False,
    exhaustive: bool = False,
    memo: PoolMemo | None = None,
) -> Pass:
    """Walk ``entries`` in policy order and start each job whose best candidate can start now.

    ``start`` releases a job to its candidate and says whether the site took it. A job
    whose best candidate must wait holds what ``policy.hold`` says (the pool's free
    capacity, or an EASY reservation) so that later, smaller jobs cannot starve it; with
    a strict policy it also stops the pass. With a preempting policy, ``running`` jobs
    (by ``tier``, lowest first) and a ``preempt`` callback that stops one, a waiting job may
    stop preemptible jobs of a later tier in its best pool and start there.

    ``ordered`` says ``entries`` are in the policy's order already (a replay keeps its
    queue sorted); the pass then ends as soon as no later job can start, without listing
    the rest as waiting (a replay does not show reasons).

    The pass skips placing jobs that can only wait and whose reservation would change
    nothing. ``exhaustive`` turns those shortcuts off, so that tests can check they change
    no decision. ``memo`` keeps the pools of each request from one pass to the next.
    """
    live = dict(snapshots)
    result = Pass()
    if ordered:
        walk = entries
    else:
        by_id = {e.queued.job_id: e for e in entries}
        walk = [by_id[q.job_id] for q in policy.order([e.queued for e in entries], now)]
    gpus_free = _free_gpus(live)
    # CPU-only jobs still to walk (counted when first needed): while any remain, every GPU
    # job's reservation matters.
    cpu_left: int | None = None
    slack: bool | None = None  # whether CPUs and memory abound (see ``_slack``), when needed
    if memo is None:
        memo = PoolMemo()
    memo.check(live)
    # Live capacity by (site, pool), kept with ``live``; ``version`` counts its changes, and
    # the most free GPUs of a pool list is cached until the next change.
    caps = {(name, c.pool): c for name, snap in live.items() for c in snap.pools}
    version = 0
    most_free: dict[int, tuple[int, int]] = {}
    # The relative speed of each pool's GPU model (1.0 for none or an unknown one).
    speeds: dict[tuple[str, str], float] = {}
    for name, snap in live.items():
        for pool in snap.site.pools:
            model = gpus.get(pool.gpu_model or "")
            speeds[(name, pool.name)] = model.relative_speed if model else 1.0

    def pools_of(job: JobRequest) -> list[tuple[str, str]]:
        return memo.pools(job, live)

    def free_in(pools: list[tuple[str, str]]) -> int:
        cached = most_free.get(id(pools))
        if cached is not None and cached[0] == version:
            return cached[1]
        most = most_free_gpus(pools, caps)
        most_free[id(pools)] = (version, most)
        return most

    def update(site: str, snap: SiteSnapshot) -> None:
        nonlocal version
        live[site] = snap
        version += 1
        for c in snap.pools:
            caps[(site, c.pool)] = c

    # EASY reservations of this pass: (site, pool) -> (start time of the waiting job, spare GPUs).
    reserved: dict[tuple[str, str], list[float]] = {}
    stoppable = Stoppable(running if policy.preempts and preempt is not None else ())

    # Whether a GPU job that finds no free GPU in its pools may be skipped without its hold:
    # an EASY reservation is then never made (below); keeping a pool's free capacity is moot
    # unless a job stopped later in the pass frees some (no built-in policy does both).
    unheld = policy.hold != "pool" or stoppable.top_tier < 0

    def allowed(entry: Entry, cand: Candidate) -> bool:
        """Whether starting ``entry`` on ``cand`` keeps the pool's reservation (if any)."""
        held = reserved.get((cand.site, cand.pool))
        if held is None:
            return True
        cap = live[cand.site].capacity(cand.pool)
        as_of = cap.as_of if cap is not None else 0.0
        if as_of + _runtime(entry, cand) <= held[0]:
            return True
        if entry.request.resources.gpus <= held[1]:
            held[1] -= entry.request.resources.gpus
            return True
        return False

    def take(entry: Entry, cand: Candidate, placement: Placement) -> bool:
        nonlocal gpus_free
        res = entry.request.resources
        if not start(entry, cand, placement):
            return False
        result.started.append((entry, cand, placement))
        update(cand.site, live[cand.site].taking(cand.pool, res.gpus, res.cpus, res.memory_bytes))
        gpus_free = gpus_free and _free_gpus(live)
        return True

    def stop_for(entry: Entry, placement: Placement) -> bool:
        """Stop running jobs of later tiers in the first candidate pool, best first, where
        that frees enough GPUs for ``entry``, and start it there; whether it started."""
        nonlocal gpus_free
        res = entry.request.resources
        tier = policy.tier(entry.queued)
        for cand in placement.candidates:
            cap = live[cand.site].capacity(cand.pool)
            if cap is None:
                continue
            victims = stoppable.victims(res.gpus, tier, (cand.site, cand.pool), cap.free_gpus)
            if not victims:
                # None: stopping them all is not enough; empty: the GPUs are free but kept
                # for an earlier job (it would have started otherwise).
                continue
            for v in victims:
                if preempt is not None and preempt(v):
                    stoppable.remove(v)
                    result.preempted.append(v)
                    vr = v.request.resources
                    update(
                        v.site, live[v.site].taking(v.pool, -vr.gpus, -vr.cpus, -vr.memory_bytes)
                    )
                    gpus_free = True
            fresh = live[cand.site].capacity(cand.pool)
            if fresh is not None and fits_now(entry.request, fresh):
                return take(entry, replace(cand, can_start_now=True, wait_s=0.0), placement)
            return False
        return False

    for index, entry in enumerate(walk):
        queued = entry.queued
        if entry.held:
            result.held += 1
            result.waiting.append((entry, f"held: {entry.held}", None))
            continue
        res = entry.request.resources
        may_stop = False
        if stoppable.top_tier >= 0 and res.gpus > 0:
            tier = policy.tier(queued)
            # Only where stopping the jobs of later tiers would free enough GPUs.
            may_stop = tier < stoppable.top_tier and (
                exhaustive or stoppable.may_free(res.gpus, tier, pools_of(entry.request), caps)
            )
        if exhaustive:
            pass
        elif not res.gpus:
            if cpu_left is not None:
                cpu_left -= 1
        elif may_stop:
            pass
        elif policy.backfill and not gpus_free:
            if cpu_left is None:
                cpu_left = sum(
                    1 for e in walk[index:] if not e.held and not e.request.resources.gpus
                )
            if not cpu_left:
                # No pool has a free GPU and no CPU job follows: it can only wait; its
                # reason stands. In an ordered walk, so do all later jobs but the ones
                # that may stop a running job.
                if ordered and stoppable.top_tier < 0:
                    break
                if unheld:
                    continue
        elif policy.backfill:
            if slack is None:
                slack = _slack(entries, snapshots)
            pools = pools_of(entry.request)
            if ordered and policy.hold == "none" and free_in(pools) < res.gpus:
                # No pool it may use has its GPUs free: it can only wait, and holds nothing
                # (an ordered walk lists no reasons).
                continue
            if slack and not free_in(pools) and unheld:
                # It can only wait, and its reservation would take no GPU and (with CPUs
                # and memory to spare for the whole pass) change no later decision: its
                # reason stands.
                continue
            if reserved and _kept_from(entry, pools, reserved, caps, speeds, gpus):
                continue
        # An ordered walk (a replay) shows no reasons: only the pools that pass the filters.
        within = pools_of(entry.request) if ordered else None
        placement = place(entry.request, list(live.values()), gpus, within)
        best = placement.best
        if best is None:
            result.waiting.append((entry, placement.summary(), placement))
            if not policy.backfill:
                break
            continue
        if best.can_start_now and allowed(entry, best):
            take(entry, best, placement)
            continue
        if policy.hold == "easy":
            # Its best pool is kept for an earlier job: another pool that can start it now.
            other = next(
                (c for c in placement.candidates if c.can_start_now and allowed(entry, c)), None
            )
            if other is not None:
                take(entry, other, placement)
                continue
        if may_stop and stop_for(entry, placement):
            continue
        snap = live[best.site]
        cap = snap.capacity(best.pool)
        result.waiting.append((entry, waiting_reason(best, res.describe()), placement))
        if not policy.backfill or cap is None:
            if not policy.backfill:
                break
            continue
        key = (best.site, best.pool)
        if (
            policy.hold == "easy"
            and res.gpus
            and not may_stop
            and not free_in(pools_of(entry.request))
        ):
            # An EASY reservation keeps GPUs as they free up for the job that waits longest.
            # While none is free in any pool the job may use, it reserves nothing: GPUs free
            # up between passes, and the first pass that sees one makes the reservation. A
            # job that outranks running jobs it may stop still reserves its best pool. (Both
            # other choices, every job reserving or none, gave grappe a worse average JCT on
            # the Philly trace: docs/scheduling.md.)
            continue
        if policy.hold == "easy" and key not in reserved:
            shadow = cap.shadow(res.gpus) if cap.releases else None
            if shadow is not None:
                reserved[key] = [shadow[0], float(shadow[1])]
                continue
        if policy.hold in ("pool", "easy") and key not in reserved:
            # No reservation can be timed: the job keeps the pool's free capacity.
            update(
                best.site,
                snap.taking(
                    best.pool,
                    min(res.gpus, max(cap.free_gpus, 0)),
                    min(res.cpus, max(cap.free_cpus, 0)),
                    min(res.memory_bytes, max(cap.free_memory_bytes, 0)),
                ),
            )
            gpus_free = gpus_free and _free_gpus(live)
    return result
