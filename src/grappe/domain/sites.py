"""Sites of the federation, their pools, and live capacity snapshots.

A *site* is one operator's installation (a supercomputer, a cloud region, this
machine) run by one engine. A *pool* is a homogeneous set of nodes in it (a
Slurm partition, a Ray node type). A *snapshot* is what the site's backend
reports right now: free and total capacity per pool and the load queued there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from grappe.domain.datasets import DEFAULT_BANDWIDTH_BYTES_S
from grappe.domain.quantum import QuantumDevice


@dataclass(frozen=True)
class GpuModel:
    """One GPU model of the catalog; ``relative_speed`` is 1.0 for an A100."""

    name: str
    vendor: str
    memory_gb: int
    relative_speed: float
    tdp_watts: int
    source: str = ""


@dataclass(frozen=True)
class Pool:
    """A homogeneous group of nodes within a site."""

    name: str
    nodes: int
    cpus_per_node: int
    memory_bytes_per_node: int
    gpu_model: str | None = None
    gpus_per_node: int = 0
    gpu_memory_gb: int | None = None
    price_eur_gpu_hour: float = 0.0
    price_eur_cpu_hour: float = 0.0
    device: QuantumDevice | None = None  # set when the pool is a quantum device

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def total_cpus(self) -> int:
        return self.nodes * self.cpus_per_node


@dataclass(frozen=True)
class Site:
    """A site as the operator declared it in ``factory.yaml``."""

    name: str
    operator: str
    country: str
    jurisdiction: str
    certifications: tuple[str, ...]
    carbon_g_per_kwh: float
    backend: str
    pools: tuple[Pool, ...]
    pue: float = 1.2
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # Jobs run only as the member's own account there (no shared service account).
    requires_member_account: bool = False
    # How fast datasets reach the site (bytes per second), for the staging-time estimate.
    bandwidth_bytes_s: float = DEFAULT_BANDWIDTH_BYTES_S
    # Where the site keeps its copies of datasets (<path>/<sector>/<name>/<version>/<file>).
    datasets_path: str | None = None

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)


@dataclass(frozen=True)
class PoolCapacity:
    """Free and total capacity of one pool at one moment."""

    pool: str
    free_gpus: int
    free_cpus: int
    free_memory_bytes: int
    free_nodes: int = 0
    # Work ahead of a new job, for the expected-wait estimate: what is queued at
    # the site for this pool and what its running jobs still need (at most).
    pending_gpu_seconds: float = 0.0
    running_gpu_seconds_left: float = 0.0
    pending_cpu_seconds: float = 0.0
    running_cpu_seconds_left: float = 0.0
    # A quantum device reserved now for one project's session: others wait.
    reserved_for: str | None = None
    # When running jobs give their GPUs back, for reservations (EASY backfill): pairs of
    # (time in seconds on the scheduler's clock, GPUs), by time; ``as_of`` is the snapshot's
    # time on that clock. Empty when the engine does not say (then no reservation is made).
    as_of: float = 0.0
    releases: Sequence[tuple[float, int]] = ()

    def shadow(self, gpus: int) -> tuple[float, int] | None:
        """When ``gpus`` GPUs will be free, and how many more than that are free then.

        ``None`` when the known releases never free that many. The answer is the
        reservation of EASY backfill: the time a waiting job can start at the latest,
        and the GPUs that later jobs may use without delaying it.
        """
        free = self.free_gpus
        if free >= gpus:
            return self.as_of, free - gpus
        shadow: float | None = None
        for at, count in self.releases:
            if shadow is not None and at > shadow:
                break
            free += count
            if shadow is None and free >= gpus:
                shadow = at  # GPUs freed at that same moment count as extra too
        return None if shadow is None else (shadow, free - gpus)


@dataclass(frozen=True)
class SiteSnapshot:
    """A site and its live capacity; ``available=False`` when it did not answer."""

    site: Site
    pools: tuple[PoolCapacity, ...]
    available: bool = True
    error: str = ""

    def capacity(self, pool: str) -> PoolCapacity | None:
        return next((c for c in self.pools if c.pool == pool), None)

    def taking(self, pool: str, gpus: int, cpus: int, memory_bytes: int) -> SiteSnapshot:
        """This snapshot after a job of that size has been started in ``pool``.

        Lets the scheduler dispatch several jobs in one pass without asking
        the site again between them.
        """
        new = []
        for cap in self.pools:
            if cap.pool == pool:
                cap = replace(
                    cap,
                    free_gpus=cap.free_gpus - gpus,
                    free_cpus=cap.free_cpus - cpus,
                    free_memory_bytes=cap.free_memory_bytes - memory_bytes,
                )
            new.append(cap)
        return replace(self, pools=tuple(new))
