"""Snapshots of sites as declared, as if empty: "where could this run, given what the sites are".

Placement (``grappe.placement.place``) ranks sites from *snapshots*: what each
site's engine reports as free and queued right now. To plan against a
federation file alone (``grappe plan --federation FED.yaml``), with no engine
running and no factory to ask, use :func:`declared_snapshots` instead: every
pool is free up to its declared totals (nodes x per-node GPUs, CPUs and
memory) with no work queued, so the answer is what the sites *are*, not how
busy they happen to be. Hard constraints (jurisdiction, certifications, GPU
model, node sizes, price) still apply; waits are zero wherever the job fits.

Do not use it to dispatch jobs: a live factory takes its snapshots from the
backends, which know what is actually free.
"""

from __future__ import annotations

from collections.abc import Sequence

from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot


def _empty(pool: Pool) -> PoolCapacity:
    return PoolCapacity(
        pool=pool.name,
        free_gpus=pool.total_gpus,
        free_cpus=pool.total_cpus,
        free_memory_bytes=pool.nodes * pool.memory_bytes_per_node,
        free_nodes=pool.nodes,
    )


def declared_snapshots(sites: Sequence[Site]) -> list[SiteSnapshot]:
    """One snapshot per site, in order: each pool entirely free, nothing queued or running."""
    return [SiteSnapshot(site=site, pools=tuple(_empty(p) for p in site.pools)) for site in sites]
