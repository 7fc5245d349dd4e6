"""Which pending jobs one pass sees, when the queue is deeper than a pass may walk.

A single cap on the whole queue would let jobs that no free pool can hold hide the
ones behind them that could start (jobs too wide for the pools of small nodes, for
instance). So the cap counts per pool, as Slurm's ``bf_max_job_part`` keeps one
partition from using up the jobs its backfill tests. The live loop (``window``) and
trace replay (its own sorted queues) both cut the queue with ``per_pool_window``.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from grappe.domain.sites import SiteSnapshot
from grappe.scheduler.lookups import PoolMemo
from grappe.scheduler.policies import Policy

if TYPE_CHECKING:
    from grappe.scheduler.decide import Entry

# A live pass walks the first MAX_PENDING_PER_PASS pending jobs of each pool, in the
# policy's order, of the oldest MAX_PENDING_READ that it reads from the store.
MAX_PENDING_PER_PASS = 1000
MAX_PENDING_READ = 10 * MAX_PENDING_PER_PASS

NOWHERE = (("", ""),)  # the pools of a job that no pool may run, for ``window``

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def per_pool_window(
    ranked: Iterable[T],
    pools_of: Callable[[T], Sequence[K]],
    pending: Mapping[K, int],
    cap: int,
) -> list[T]:
    """Of ``ranked`` (every pending job, in the policy's order), the first ``cap`` that may
    run in each pool: a job is kept if it is among them for one of its pools.

    ``pending`` counts the pending jobs that may run in each pool: the walk stops once
    every pool has all it can get.
    """
    seen: Counter[K] = Counter()
    open_pools = sum(1 for count in pending.values() if count)
    picked: list[T] = []
    for job in ranked:
        if open_pools <= 0:
            break
        wanted = False
        for key in pools_of(job):
            before = seen[key]
            if before < cap:
                wanted = True
                seen[key] = before + 1
                if before + 1 == min(cap, pending[key]):
                    open_pools -= 1
        if wanted:
            picked.append(job)
    return picked


def per_pool_window_of_runs(runs: Iterable[tuple[Sequence[K], list[Any]]], cap: int) -> list[Any]:
    """What ``per_pool_window`` keeps when the pending jobs come as sorted runs, found with
    sorts instead of a walk.

    Each run is ``(pools, jobs)``: jobs that may all run in ``pools``, in the policy's
    order, which is the order the jobs themselves sort in. Kept jobs are a prefix of each
    run: those at most the ``cap``-th job of one of their pools (all of them where a pool
    has fewer). Each run is read only up to ``cap``: a job with ``cap`` jobs before it in
    its run has them before it in each of its pools.
    """
    heads = [(pools, jobs[:cap]) for pools, jobs in runs]
    last: dict[K, Any] = {}
    for key in {key for pools, _ in heads for key in pools}:
        ranked = sorted(itertools.chain(*(head for pools, head in heads if key in pools)))
        last[key] = ranked[cap - 1] if len(ranked) >= cap else None
    kept: list[list[Any]] = []
    for pools, head in heads:
        bounds = [last[key] for key in pools]
        if not bounds:  # no pool may run them: none is kept
            continue
        if any(b is None for b in bounds):
            kept.append(head)
        else:
            kept.append(head[: bisect.bisect_right(head, max(bounds))])
    return sorted(itertools.chain(*kept))


def window(
    entries: Sequence[Entry],
    policy: Policy,
    snapshots: Mapping[str, SiteSnapshot],
    cap: int,
    now: datetime | None = None,
    memo: PoolMemo | None = None,
) -> list[Entry]:
    """Of the pending ``entries``, those one pass walks, in the policy's order: the first
    ``cap`` that may run in each pool, or with a policy without backfill (it stops at its
    first job that must wait) the first ``cap`` of all."""
    by_id = {e.queued.job_id: e for e in entries}
    ranked = [by_id[q.job_id] for q in policy.order([e.queued for e in entries], now)]
    if not policy.backfill or len(ranked) <= cap:
        return ranked[:cap]
    known = memo if memo is not None else PoolMemo()
    known.check(snapshots)

    def pools_of(e: Entry) -> Sequence[tuple[str, str]]:
        # A job no pool may run still gets its reason written: those count as one pool.
        return known.pools(e.request, snapshots) or NOWHERE

    pending = Counter(key for e in ranked for key in pools_of(e))
    return per_pool_window(ranked, pools_of, pending, cap)
