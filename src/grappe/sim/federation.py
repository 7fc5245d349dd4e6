"""The simulated federation a replay runs on, and a trace's load on it.

Each pool's running state (free GPUs, CPUs and memory, and the GPU-seconds its
running jobs still hold) as the ``PoolCapacity`` a snapshot reports; the
federation's GPUs, the load a trace offers them and the trace rescaled to a
given load; each trace job as the request Grappe would be asked for, or why no
pool could ever hold it. ``grappe.sim.replay`` drives these on its virtual clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from grappe.catalog import gpu_model
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import GpuModel, Pool, PoolCapacity, Site
from grappe.sim.trace import TraceJob


@dataclass
class PoolState:
    """One simulated pool: what is free now, and what its running jobs hold and until when."""

    site: Site
    pool: Pool
    free_gpus: int
    free_cpus: int
    free_memory: int
    speed: float
    running_gpus: int = 0
    running_end_gpu_s: float = 0.0  # sum of end time x GPUs of running jobs
    # (end time, GPUs) of running jobs by end time, kept only for policies that reserve;
    # handed to the pass as it is (no copy), and changed only between passes.
    ends: list[tuple[float, int]] = field(default_factory=list)

    def capacity(self, now: float) -> PoolCapacity:
        left = max(self.running_end_gpu_s - now * self.running_gpus, 0.0)
        return PoolCapacity(
            pool=self.pool.name,
            free_gpus=self.free_gpus,
            free_cpus=self.free_cpus,
            free_memory_bytes=self.free_memory,
            running_gpu_seconds_left=left,
            as_of=now,
            releases=self.ends,
        )


def gpu_speed(gpus: Mapping[str, GpuModel], model: str | None) -> float:
    """The relative speed of a catalog GPU model; 1.0 for an unknown model or none."""
    known = gpus.get(model or "")
    return known.relative_speed if known else 1.0


def total_gpus(sites: list[Site]) -> int:
    """GPUs of the whole federation."""
    return sum(p.total_gpus for s in sites for p in s.pools)


def offered_load(jobs: list[TraceJob], gpus: int) -> float:
    """GPU-seconds asked for over the trace's span, as a fraction of ``gpus`` GPUs."""
    if not jobs or gpus <= 0:
        return 0.0
    span = max(j.submit_time_s for j in jobs) - min(j.submit_time_s for j in jobs)
    work = sum(j.num_gpus * j.duration_s for j in jobs)
    return work / (span * gpus) if span > 0 else math.inf


def rescale(jobs: list[TraceJob], gpus: int, load: float) -> tuple[list[TraceJob], float]:
    """The jobs with submission times stretched so the offered load is ``load`` of ``gpus``.

    Returns the jobs (first submission at 0) and the factor applied to the times.
    """
    if load <= 0:
        raise ValueError(f"load {load} must be above 0")
    if not jobs:
        return [], 1.0
    first = min(j.submit_time_s for j in jobs)
    span = max(j.submit_time_s for j in jobs) - first
    work = sum(j.num_gpus * j.duration_s for j in jobs)
    if span <= 0 or work <= 0 or gpus <= 0:
        return list(jobs), 1.0
    factor = work / (load * gpus) / span
    out = [
        TraceJob(
            job_id=j.job_id,
            submit_time_s=(j.submit_time_s - first) * factor,
            num_gpus=j.num_gpus,
            duration_s=j.duration_s,
            gpu_type=j.gpu_type,
            user=j.user,
            vc=j.vc,
            status=j.status,
        )
        for j in jobs
    ]
    return out, factor


def request_for(
    job: TraceJob, index: int, sites: list[Site], gpus: Mapping[str, GpuModel]
) -> JobRequest | str:
    """The job as Grappe would be asked for it, or why no pool could ever hold it."""
    model: str | None = None
    # A job without GPUs asks for no GPU model, whatever its row says of one.
    if job.gpu_type and job.num_gpus:
        known = gpu_model(job.gpu_type)
        if known is None:
            return f"GPU type {job.gpu_type!r} is not in the catalog"
        model = known.name
    pools = [p for s in sites for p in s.pools if p.gpus_per_node]
    if model:
        pools = [p for p in pools if p.gpu_model == model]
    nodes = 1
    if job.num_gpus:
        if not pools:
            return f"no pool has {model or 'any'} GPUs"
        widest = max(p.gpus_per_node for p in pools)
        # Bigger jobs span nodes: as few as the widest pool allows.
        nodes = -(-job.num_gpus // widest)
        per = -(-job.num_gpus // nodes)
        if not any(p.nodes >= nodes and p.gpus_per_node >= per for p in pools):
            return f"no pool can hold {job.num_gpus} GPUs on {nodes} node(s)"
    return JobRequest(
        id=str(index),
        project=job.group,
        resources=Resources(gpus=job.num_gpus, gpu_model=model, cpus=1, nodes=nodes),
        max_runtime_s=max(1, math.ceil(job.duration_s)),
        objective="time",
        preemptible=True,  # trace jobs are taken as checkpointing, as in Tiresias
    )
