"""Which pending jobs one pass sees, when the queue is deeper than a pass may walk.

A single cap on the whole queue would let jobs that no free pool can hold hide the
ones behind them that could start (jobs too wide for the pools of small nodes, for
instance). So the cap counts per pool, as Slurm's ``bf_max_job_part`` keeps one
partition from using up the jobs its backfill tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

# The pending jobs a pass walks (in a replay: for each pool).
MAX_PENDING_PER_PASS = 1000

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

