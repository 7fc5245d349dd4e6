"""What a scheduling pass looks up again and again, kept so that it is worked out once.

The (site, pool) pairs whose placement filters let a request through, for one
pass or, with a caller's ``PoolMemo``, from pass to pass; the most free GPUs in a
list of pools; and the running jobs a preempting pass may stop, by pool and tier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from grappe.domain.jobs import JobRequest
from grappe.domain.sites import PoolCapacity, SiteSnapshot
from grappe.placement.filters import POOL_FILTERS, SITE_FILTERS

if TYPE_CHECKING:
    from grappe.scheduler.decide import Running


def filter_pools(
    job: JobRequest,
    live: Mapping[str, SiteSnapshot],
    pools_for: dict[tuple[object, ...], list[tuple[str, str]]],
) -> list[tuple[str, str]]:
    """The (site, pool) pairs that may run ``job`` (the placement filters pass)."""
    # The filters read neither the job's runtime nor its live capacity: jobs alike share them.
    key = (
        job.resources,
        job.jurisdiction,
        job.certifications,
        job.sites_allow,
        job.sites_deny,
        job.max_price_eur_gpu_hour,
        job.site_accounts,
        job.inputs,
        job.quantum,
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
    return keys


class PoolMemo:
    """Which (site, pool) pairs may run each request, kept by a caller from pass to pass.

    The placement filters read the request and the sites, not the live capacity, so while
    the same sites answer, a request's pools stay the same. A replay hands the same request
    objects to pass after pass; with one memo for the whole run it filters each once.
    """

    def __init__(self) -> None:
        self.sites: list[tuple[str, object, bool]] = []
        self.by_key: dict[tuple[object, ...], list[tuple[str, str]]] = {}
        self.by_request: dict[int, tuple[JobRequest, list[tuple[str, str]]]] = {}

    def check(self, live: Mapping[str, SiteSnapshot]) -> None:
        """Forget everything if the sites, or which of them answer, have changed."""
        now = [(name, snap.site, snap.available) for name, snap in live.items()]
        same = len(now) == len(self.sites) and all(
            a[0] == b[0] and a[1] is b[1] and a[2] == b[2]
            for a, b in zip(now, self.sites, strict=True)
        )
        if not same:
            self.sites, self.by_key, self.by_request = now, {}, {}

    def pools(self, job: JobRequest, live: Mapping[str, SiteSnapshot]) -> list[tuple[str, str]]:
        found = self.by_request.get(id(job))
        if found is not None and found[0] is job:
            return found[1]
        pools = filter_pools(job, live, self.by_key)
        self.by_request[id(job)] = (job, pools)
        return pools


def most_free_gpus(
    pools: Sequence[tuple[str, str]], caps: Mapping[tuple[str, str], PoolCapacity]
) -> int:
    """The most free GPUs in one of ``pools`` (0 when none has any)."""
    most = 0
    for key in pools:
        cap = caps.get(key)
        if cap is not None and cap.free_gpus > most:
            most = cap.free_gpus
    return most


class Stoppable:
    """The running jobs a pass may stop, indexed by pool on first use (most passes never ask)."""

    def __init__(self, running: Sequence[Running]) -> None:
        self.running = running
        # ``running`` comes by tier, lowest first: the last preemptible one has the top tier.
        self.top_tier = next((r.tier for r in reversed(running) if r.request.preemptible), -1)
        # (site, pool) -> its preemptible running jobs, in ``running``'s order.
        self._by_pool: dict[tuple[str, str], list[Running]] | None = None
        # (site, pool) -> GPUs of its preemptible jobs whose tier is above t, at index t.
        self._above: dict[tuple[str, str], list[int]] = {}

    def by_pool(self) -> dict[tuple[str, str], list[Running]]:
        if self._by_pool is None:
            self._by_pool = {}
            for r in self.running:
                if r.request.preemptible:
                    self._by_pool.setdefault((r.site, r.pool), []).append(r)
            for key, found in self._by_pool.items():
                found.sort(key=lambda r: r.tier)  # stable: a caller's order within a tier
                above = [0] * (self.top_tier + 1)
                for r in found:
                    for t in range(r.tier):
                        above[t] += r.request.resources.gpus
                self._above[key] = above
        return self._by_pool

    def above(self, key: tuple[str, str]) -> list[int]:
        """GPUs of the pool's preemptible jobs above each tier (index: tier)."""
        self.by_pool()
        return self._above.get(key) or [0] * (self.top_tier + 1)

    def victims(
        self, gpus: int, tier: int, key: tuple[str, str], free: int
    ) -> list[Running] | None:
        """The fewest running jobs of a tier above ``tier`` in pool ``key`` to stop so that
        ``gpus`` fit beside the ``free`` ones; ``None`` when stopping all of them is not enough.

        The highest tier stops first, and within a tier the job that started last.
        """
        in_pool = self.by_pool().get(key, [])
        need = gpus - free
        if need > self.above(key)[tier]:
            return None
        picked: list[Running] = []
        # By tier, lowest first: from the end, every job is above ``tier`` until ``need`` is met.
        for r in reversed(in_pool):
            if need <= 0:
                break
            picked.append(r)
            need -= r.request.resources.gpus
        return picked

    def remove(self, r: Running) -> None:
        key = (r.site, r.pool)
        self.by_pool()[key].remove(r)
        above = self._above[key]
        for t in range(r.tier):
            above[t] -= r.request.resources.gpus

    def may_free(
        self,
        gpus: int,
        tier: int,
        pools: Sequence[tuple[str, str]],
        caps: Mapping[tuple[str, str], PoolCapacity],
    ) -> bool:
        """Whether a pool of ``pools`` has ``gpus`` free once its jobs above ``tier`` stop."""
        self.by_pool()
        for key in pools:
            above = self._above.get(key)
            cap = caps.get(key)
            if above is not None and cap is not None and cap.free_gpus + above[tier] >= gpus:
                return True
        return False
