"""Replay a job trace through Grappe's own scheduling pass on a virtual clock.

A discrete-event simulation: the events are job arrivals and completions, on
a clock of plain float seconds. At each event time the simulated sites' free
capacity is updated and ``grappe.scheduler.decide.decide`` (the very function
the live loop calls) chooses which pending jobs start where. A started job
runs for its recorded duration scaled by the speed of the GPU model it got.

Capacity is pooled per pool (free GPUs and CPUs in total, as an engine's
snapshot reports them); node fragmentation is not modelled. The simulated pools,
the trace's load and its jobs as requests are in ``grappe.sim.federation``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from grappe.catalog import REFERENCE_GPU, gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.sites import Site, SiteSnapshot
from grappe.placement import Candidate, Placement
from grappe.scheduler import decide as decide_module
from grappe.scheduler.decide import Entry, Running
from grappe.scheduler.lookups import PoolMemo
from grappe.scheduler.policies import KeyedPolicy, Policy, QueuedJob, policy
from grappe.scheduler.predict import RuntimePredictor
from grappe.scheduler.window import (
    MAX_PENDING_PER_PASS,
    per_pool_window,
    per_pool_window_of_runs,
    window,
)
from grappe.sim.federation import PoolState, gpu_speed, request_for, rescale, total_gpus
from grappe.sim.records import JobRecord, SimResult
from grappe.sim.trace import TraceJob

# Virtual time zero, as a date: QueuedJob orders by submission datetime.
EPOCH = datetime(2017, 1, 1, tzinfo=UTC)
# The jobs of one group that may run in the same pools: (group, its (site, pool) pairs).
Lane = tuple[str, tuple[tuple[str, str], ...]]


def replay(
    jobs: list[TraceJob],
    sites: list[Site],
    policy_name: str,
    load: float | None = None,
    max_pending: int = MAX_PENDING_PER_PASS,
) -> SimResult:
    """Replay ``jobs`` on ``sites`` under the named policy; ``ValueError`` for an unknown one.

    ``load`` rescales submission times so the offered load is that fraction of the
    federation's GPUs. ``max_pending`` caps the jobs one pass sees: for each pool, the
    first that many in the policy's order that may run there. Trace jobs are preemptible:
    a policy that preempts stops one and resumes it later where it stopped (as from a
    checkpoint).
    """
    pol: Policy = policy(policy_name)
    started_wall = time.perf_counter()
    catalog = gpu_models()
    gpus_total = total_gpus(sites)

    records: list[JobRecord] = []
    requests: list[JobRequest] = []
    rejected: list[tuple[str, str]] = []
    accepted: list[TraceJob] = []
    for job in jobs:
        req = request_for(job, len(requests), sites, catalog)
        if isinstance(req, str):
            rejected.append((job.job_id, req))
            continue
        accepted.append(job)
        requests.append(req)
    factor = 1.0
    if load is not None:
        accepted, factor = rescale(accepted, gpus_total, load)
    # Rescaling keeps order; the index of a job is its place in ``accepted``.
    order = sorted(range(len(accepted)), key=lambda i: accepted[i].submit_time_s)
    for job in accepted:
        records.append(
            JobRecord(
                job.job_id,
                job.group,
                job.num_gpus,
                job.submit_time_s,
                job.duration_s,
                user=job.user,
            )
        )
    n = len(records)
    gpus_of = [r.num_gpus for r in records]
    remaining = [r.duration_s for r in records]  # reference-GPU seconds still to run
    attained = [0.0] * n  # GPU-seconds received before the current run
    run_start = [0.0] * n
    version = [0] * n  # bumped when a job stops: its pending events are void
    predicted = [0.0] * n
    ref_speed = [gpu_speed(catalog, req.resources.gpu_model or REFERENCE_GPU) for req in requests]

    pools: dict[tuple[str, str], PoolState] = {
        (s.name, p.name): PoolState(
            s,
            p,
            p.total_gpus,
            p.total_cpus,
            p.nodes * p.memory_bytes_per_node,
            gpu_speed(catalog, p.gpu_model),
        )
        for s in sites
        for p in s.pools
    }
    gpu_pools = [st for st in pools.values() if st.pool.gpus_per_node]
    reserves = pol.hold == "easy"
    preempts = pol.preempts
    thresholds: tuple[float, ...] = getattr(pol, "thresholds", ())
    learns = getattr(pol, "starve_factor", None) is not None
    predictor = RuntimePredictor()

    # Pending jobs per group in arrival order (dicts keep insertion order, delete in O(1)).
    pending: dict[str, dict[int, None]] = {}
    pending_sizes: Counter[int] = Counter()
    entries: dict[int, tuple[int, Entry]] = {}  # job -> (share step it was built for, entry)
    # Running jobs by tier (for preemption), each with its ``Running`` as of its tier.
    tiers: list[dict[int, Running]] = [{} for _ in range(len(thresholds) + 1)]
    used: dict[str, float] = {}  # GPU-seconds charged to each group, at start
    used_total = 0.0
    step: float | None = getattr(pol, "share_step", None)
    events: list[tuple[float, int, int, int]] = []  # (time, 0 end / 1 next tier, version, job)
    violations = 0
    notes: list[str] = []
    calls = 0
    now = 0.0
    # With a policy that gives its sort key, each group's pending jobs stay sorted by it
    # between passes (only arrivals, starts, stops and the key changes the policy
    # announces move them), so a pass does not sort the whole queue.
    keyed: KeyedPolicy | None = pol if isinstance(pol, KeyedPolicy) else None
    # One sorted queue per lane: the jobs of one group that may run in the same pools.
    queues: dict[Lane, list[tuple[tuple[Any, ...], int]]] = {}
    lanes: list[Lane | None] = [None] * n
    keys: dict[int, tuple[tuple[Any, ...], int]] = {}
    rekeys: list[tuple[float, int, int]] = []  # (time, sequence, job) of announced changes
    rekey_seq: dict[int, int] = {}
    counter = itertools.count()
    memo = PoolMemo()  # the sites never change: each request's pools are filtered once
    # The filters read no live capacity: the pools a job may run in, from any snapshot.
    static = {
        s.name: SiteSnapshot(s, tuple(pools[(s.name, p.name)].capacity(0.0) for p in s.pools))
        for s in sites
    }
    # Pending jobs that may run in each pool (``window`` stops once it has seen enough).
    pending_pools: Counter[tuple[str, str]] = Counter()

    def pools_of(i: int) -> list[tuple[str, str]]:
        return memo.pools(requests[i], static)

    def pend(i: int, change: int) -> None:
        """Count pending job ``i`` in (``change`` 1) or out (-1) of the pending tallies."""
        pending_sizes[gpus_of[i]] += change
        if not pending_sizes[gpus_of[i]]:
            del pending_sizes[gpus_of[i]]
        for key in pools_of(i):
            pending_pools[key] += change

    def share_step(group: str) -> int:
        if used_total <= 0 or step is None:
            return 0
        return int(used.get(group, 0.0) / used_total / step)

    def queued_of(i: int, share: float, service: float) -> QueuedJob:
        rec = records[i]
        at = EPOCH + timedelta(seconds=rec.submit_s)
        return QueuedJob(i, at, rec.group, 0, share, gpus_of[i], service, predicted[i])

    def entry_of(i: int, s: int) -> Entry:
        cached = entries.get(i)
        if cached is not None and cached[0] == s:
            return cached[1]
        # The policy orders by the share's step only: report its middle, exact in floats.
        share = (s + 0.5) * step if step is not None else 0.0
        made = Entry(queued_of(i, share, attained[i]), requests[i])
        entries[i] = (s, made)
        return made

    def on_threshold(service: float) -> float:
        """Exactly the LAS threshold ``service`` reached, whatever the rounding of the times."""
        return next((t for t in thresholds if abs(t - service) < 1e-3), service)

    def next_tier(i: int, service: float) -> None:
        """Schedule the moment the running job ``i`` enters its next LAS tier, if it does."""
        above = [t for t in thresholds if t > service]
        if not above or not gpus_of[i]:
            return
        at = now + (above[0] - service) / gpus_of[i]
        if at < (records[i].end_s or 0.0):
            heapq.heappush(events, (at, 1, version[i], i))

    def run_as(i: int, service: float, site: str, pool: str) -> None:
        if not preempts:
            return
        q = queued_of(i, 0.0, service)
        if learns and gpus_of[i]:
            q = replace(q, aging=predictor.aging(gpus_of[i], service / gpus_of[i]))
        # A job the policy shields is in the first tier: no waiting job may stop it.
        tier = 0 if pol.shielded(q, EPOCH + timedelta(seconds=now)) else pol.tier(q)
        for level in tiers:
            level.pop(i, None)
        tiers[tier][i] = Running(q, requests[i], site, pool, tier)
        next_tier(i, service)

    def start(entry: Entry, best: Candidate, placement: Placement) -> bool:
        nonlocal violations, used_total
        i = entry.queued.job_id
        rec, res = records[i], entry.request.resources
        st = pools[(best.site, best.pool)]
        if res.gpu_model and st.pool.gpu_model != res.gpu_model:
            violations += 1
            notes.append(f"{rec.job_id}: asked {res.gpu_model}, got {st.pool.gpu_model}")
            return False
        if res.gpus > st.free_gpus or res.cpus > st.free_cpus:
            violations += 1
            notes.append(f"{rec.job_id}: {res.gpus} GPUs over capacity of {best.pool}")
            return False
        runtime = remaining[i] * ref_speed[i] / st.speed if res.gpus else remaining[i]
        end = now + runtime
        st.free_gpus -= res.gpus
        st.free_cpus -= res.cpus
        st.running_gpus += res.gpus
        st.running_end_gpu_s += end * res.gpus
        if reserves:
            bisect.insort(st.ends, (end, res.gpus))
        if rec.start_s is None:
            rec.start_s = now
        run_start[i], rec.end_s = now, end
        rec.site, rec.pool, rec.gpu_model = best.site, best.pool, st.pool.gpu_model
        used[rec.group] = used.get(rec.group, 0.0) + runtime * res.gpus
        used_total += runtime * res.gpus
        del pending[rec.group][i]
        dequeue(i)
        pend(i, -1)
        heapq.heappush(events, (end, 0, version[i], i))
        run_as(i, attained[i], best.site, best.pool)
        return True

    def release(i: int) -> PoolState:
        """Give back the GPUs of running job ``i`` (it ended or stops)."""
        st = pools[(records[i].site or "", records[i].pool or "")]
        res = requests[i].resources
        st.free_gpus += res.gpus
        st.free_cpus += res.cpus
        st.running_gpus -= res.gpus
        end = records[i].end_s or 0.0
        st.running_end_gpu_s -= end * res.gpus
        if reserves:
            del st.ends[bisect.bisect_left(st.ends, (end, res.gpus))]
        for level in tiers:
            level.pop(i, None)
        return st

    def preempt(victim: Running) -> bool:
        nonlocal used_total
        i = victim.queued.job_id
        rec = records[i]
        st = release(i)
        ran = now - run_start[i]
        left = (rec.end_s or now) - now
        remaining[i] = max(remaining[i] - ran * st.speed / ref_speed[i], 0.0)
        # Stopped the instant it reached a tier, it keeps that tier: otherwise it would
        # rank ahead of the job that just stopped it and stop it in turn, forever.
        attained[i] = on_threshold(attained[i] + ran * gpus_of[i])
        rec.ran_s += ran
        rec.preemptions += 1
        rec.end_s = None
        version[i] += 1
        # Charge only what ran; resumed, it asks for what is left.
        used[rec.group] -= left * gpus_of[i]
        used_total -= left * gpus_of[i]
        requests[i] = replace(requests[i], max_runtime_s=max(1, math.ceil(remaining[i])))
        entries.pop(i, None)
        pending.setdefault(rec.group, {})[i] = None
        enqueue(i)
        pend(i, 1)
        return True

    def when(at: datetime) -> float:
        return (at - EPOCH).total_seconds()

    def enqueue(i: int) -> None:
        """Put pending job ``i`` in its group's sorted queue (when the policy has keys)."""
        if keyed is None:
            return
        at = EPOCH + timedelta(seconds=now)
        # Keyed with no share: the share is the same for a whole group, so it cannot
        # change the order within one; ``head`` merges the groups with the real share.
        q = queued_of(i, 0.0, attained[i])
        k = (keyed.key(q, at), i)
        keys[i] = k
        bisect.insort(queues.setdefault(lane_of(i), []), k)
        change = keyed.key_changes_at(q, at)
        if change is not None:
            rekey_seq[i] = seq = next(counter)
            heapq.heappush(rekeys, (when(change), seq, i))

    def lane_of(i: int) -> Lane:
        found = lanes[i]
        if found is None:
            # Without backfill a pass stops at the first job that waits: one lane a group.
            found = (records[i].group, tuple(pools_of(i)) if pol.backfill else ())
            lanes[i] = found
        return found

    def dequeue(i: int) -> None:
        if keyed is None:
            return
        queue = queues[lane_of(i)]
        del queue[bisect.bisect_left(queue, keys.pop(i))]
        rekey_seq.pop(i, None)

    def head() -> list[Entry]:
        """The jobs one pass sees: for each pool, the first ``max_pending`` pending jobs in
        the policy's order that may run there. A policy without sort keys has the whole
        queue ordered and cut as the live loop does (``window``)."""
        if keyed is not None:
            return sorted_head(keyed)
        picked: list[Entry] = []
        for g, queue in pending.items():
            s = share_step(g)
            picked += [entry_of(i, s) for i in queue]
        return window(picked, pol, static, max_pending, EPOCH + timedelta(seconds=now), memo)

    def cut(ranked: Iterable[Entry]) -> list[Entry]:
        """The first ``max_pending`` jobs of ``ranked`` that may run in each pool
        (``per_pool_window``). A policy without backfill stops at its first job that must
        wait, so it sees the first ``max_pending`` of the whole queue."""
        if not pol.backfill:
            return list(itertools.islice(ranked, max_pending))
        # With backfill, a job's lane holds its pools.
        return per_pool_window(
            ranked, lambda e: lane_of(e.queued.job_id)[1], pending_pools, max_pending
        )

    def sorted_head(keyed: KeyedPolicy) -> list[Entry]:
        """The pending jobs one pass sees, in the policy's order, from the lanes' sorted
        queues (only the jobs whose key changed move)."""
        at = EPOCH + timedelta(seconds=now)
        due: list[int] = []
        while rekeys and rekeys[0][0] <= now:
            _, seq, i = heapq.heappop(rekeys)
            if rekey_seq.get(i) == seq:
                due.append(i)
        for i in due:
            dequeue(i)
            enqueue(i)
        # A job with ``max_pending`` jobs before it in its lane has that many before it in
        # each of its pools, so ``window`` would pass it over: each lane is cut there.
        live = [lane for lane, q in queues.items() if q]
        groups = {group for group, _ in live}
        if len(groups) == 1:
            # One group: the keys kept in the lanes order the jobs as the policy does.
            s = share_step(live[0][0])
            if len(live) == 1:  # its jobs may all run in the same pools
                ranked: Iterable[tuple[Any, int]] = itertools.islice(queues[live[0]], max_pending)
            else:  # lanes are sorted runs, each of jobs that may run in the same pools
                ranked = per_pool_window_of_runs(
                    ((lane[1], queues[lane]) for lane in live), max_pending
                )
            return [entry_of(i, s) for _, i in ranked]

        def walk(lane: Lane) -> Iterator[tuple[tuple[Any, ...], Entry]]:
            s = share_step(lane[0])
            for _, i in itertools.islice(queues[lane], max_pending):
                e = entry_of(i, s)
                yield keyed.key(e.queued, at), e

        merged = heapq.merge(*(walk(lane) for lane in live), key=lambda pair: pair[0])
        return cut(e for _, e in merged)

    def could_start() -> bool:
        if not pending_sizes:
            return False
        smallest = min(pending_sizes)
        if smallest == 0:
            return True
        if preempts and any(tiers[1:]):
            return True  # a pending job may stop a running one of a later tier
        # A GPU job starts only in a pool with that many free GPUs (fits_now).
        return any(st.free_gpus >= smallest for st in gpu_pools)

    timeline: list[tuple[float, int, int]] = []

    def record() -> None:
        busy = gpus_total - sum(st.free_gpus for st in gpu_pools)
        timeline.append((now, sum(pending_sizes.values()), busy))

    nxt = 0
    # Passes in a row at one instant. Each needs an event at that instant (a job ending or
    # reaching a LAS tier), so more than a few per job is a livelock: an error, not a hang.
    same_instant = 0
    stuck_after = 10_000 + (len(thresholds) + 2) * len(order)
    while nxt < len(order) or events:
        arrival = accepted[order[nxt]].submit_time_s if nxt < len(order) else math.inf
        next_event = events[0][0] if events else math.inf
        before, now = now, min(arrival, next_event)
        same_instant = same_instant + 1 if now == before else 0
        if same_instant > stuck_after:
            raise RuntimeError(
                f"the replay made no progress: {stuck_after} passes at t={now:g} s "
                f"with policy {pol.name}"
            )
        # Every event at this instant, then one pass.
        while events and events[0][0] <= now:
            _, kind, ver, i = heapq.heappop(events)
            if ver != version[i]:
                continue  # the job stopped after this event was set
            rec = records[i]
            if kind == 1:
                service = on_threshold(attained[i] + (now - run_start[i]) * gpus_of[i])
                run_as(i, service, rec.site or "", rec.pool or "")
                continue
            release(i)
            rec.ran_s += now - run_start[i]
            if learns:
                predictor.observe(rec.user, rec.group, rec.num_gpus, rec.ran_s)
        while nxt < len(order) and accepted[order[nxt]].submit_time_s <= now:
            i = order[nxt]
            if learns:
                predicted[i] = predictor.predict(records[i].user, records[i].group, gpus_of[i])
            pending.setdefault(records[i].group, {})[i] = None
            enqueue(i)
            pend(i, 1)
            nxt += 1
        if not could_start():
            record()
            continue
        snapshots = {
            s.name: SiteSnapshot(
                s,
                tuple(pools[(s.name, p.name)].capacity(now) for p in s.pools),
            )
            for s in sites
        }
        # A job of the first tier is never stopped (no job ranks below it): a pass gets
        # only the others, by tier.
        running = [r for level in tiers[1:] for r in level.values()] if preempts else []
        calls += 1
        # Through the module, so that the live loop's decide is the one called (and patchable).
        decide_module.decide(
            head(),
            snapshots,
            pol,
            catalog,
            start,
            EPOCH + timedelta(seconds=now),
            running,
            preempt,
            ordered=True,
            memo=memo,
        )
        record()

    unfinished = sum(len(q) for q in pending.values())
    return SimResult(
        policy=pol.name,
        records=records,
        rejected=rejected,
        total_gpus=gpus_total,
        violations=violations,
        wall_s=time.perf_counter() - started_wall,
        decide_calls=calls,
        time_scale=factor,
        unfinished=unfinished,
        violation_notes=notes[:20],
        timeline=timeline,
    )
