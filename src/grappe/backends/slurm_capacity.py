"""A Slurm site's capacity per pool, from ``scontrol show node`` and ``squeue`` output.

Each pool is a partition. Its totals are the configured resources of the
partition's nodes (``CfgTRES``, or ``Gres`` for GPUs when accounting does not
track them); what is free is that less what is allocated (``AllocTRES``,
``GresUsed``) on nodes that can take jobs, so down or drained nodes count as
not free. The work ahead of a new job is what the partition's pending jobs ask
for over their time limits, and what its running jobs may still use over the
time they have left.
"""

from __future__ import annotations

from dataclasses import dataclass

from grappe.backends.slurm_text import SEP, duration_s, gres_gpus, mb, parse_fields, parse_tres
from grappe.domain.sites import PoolCapacity, Site, SiteSnapshot

# A job without a time limit is counted as one day of work: Slurm gives no better bound.
UNLIMITED_S = 24 * 3600.0
# squeue -O fields read by ``queued_work``, in this order.
JOB_FIELDS = (
    "State",
    "Partition",
    "NumNodes",
    "NumCPUs",
    "NumTasks",
    "TimeLimit",
    "TimeLeft",
    "tres-per-node",
    "tres-per-job",
    "tres-per-task",
)
# Node states (scontrol's words joined by '+') in which a node takes no new job.
_UNUSABLE = {
    "DOWN",
    "DRAIN",
    "DRAINED",
    "DRAINING",
    "FAIL",
    "FAILING",
    "FUTURE",
    "INVAL",
    "MAINT",
    "NOT_RESPONDING",
    "NO_RESPOND",
    "POWER_DOWN",
    "POWERING_DOWN",
    "REBOOT_ISSUED",
    "UNKNOWN",
}


def job_format() -> str:
    """The ``squeue -O`` argument for ``queued_work``: each field followed by the separator."""
    return ",".join(f"{name}:{SEP}" for name in JOB_FIELDS)


def node_usable(state: str) -> bool:
    """Whether a node in ``state`` (``IDLE``, ``MIXED+DRAIN``, ``DOWN*``…) can start jobs."""
    if "*" in state:  # not responding
        return False
    return not any(word in _UNUSABLE for word in state.upper().split("+"))


@dataclass
class _Work:
    pending_gpu_s: float = 0.0
    pending_cpu_s: float = 0.0
    running_gpu_s: float = 0.0
    running_cpu_s: float = 0.0


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def queued_work(jobs_text: str) -> dict[str, _Work]:
    """Pending and running GPU/CPU-seconds per partition from ``squeue -O job_format()``."""
    work: dict[str, _Work] = {}
    for line in jobs_text.splitlines():
        parts = line.split(SEP)
        if len(parts) < len(JOB_FIELDS):
            continue
        state, partitions, nodes, cpus, tasks, limit, left, per_node, per_job, per_task = parts[
            : len(JOB_FIELDS)
        ]
        gpus = (
            gres_gpus(per_node) * max(_int(nodes), 1)
            + gres_gpus(per_job)
            + gres_gpus(per_task) * max(_int(tasks), 1)
        )
        ncpus = _int(cpus)
        state = state.strip().upper()
        if state == "PENDING":
            seconds = duration_s(limit)
        elif state == "COMPLETING":
            seconds = 0.0  # its resources come back as soon as its processes are gone
        else:
            seconds = duration_s(left)
        seconds = UNLIMITED_S if seconds is None else seconds
        # A job that may run in several partitions weighs on each: the estimate errs long.
        for partition in filter(None, partitions.split(",")):
            w = work.setdefault(partition, _Work())
            if state == "PENDING":
                w.pending_gpu_s += gpus * seconds
                w.pending_cpu_s += ncpus * seconds
            else:
                w.running_gpu_s += gpus * seconds
                w.running_cpu_s += ncpus * seconds
    return work


def snapshot(
    site: Site, partitions: dict[str, str], nodes_text: str, jobs_text: str
) -> SiteSnapshot:
    """The site's snapshot; ``partitions`` maps each pool to its Slurm partition."""
    nodes = [parse_fields(line) for line in nodes_text.splitlines() if line.strip()]
    work = queued_work(jobs_text)
    pools = []
    for pool in site.pools:
        partition = partitions.get(pool.name, pool.name)
        free_gpus = free_cpus = free_nodes = 0
        free_mb = 0.0
        members = [n for n in nodes if partition in n.get("Partitions", "").split(",")]
        if not members:
            continue  # no such partition here: placement rejects the pool as reporting nothing
        for node in members:
            cfg, alloc = parse_tres(node.get("CfgTRES", "")), parse_tres(node.get("AllocTRES", ""))
            cpus = _int(cfg.get("cpu") or node.get("CPUTot"))
            used_cpus = _int(alloc.get("cpu") or node.get("CPUAlloc"))
            memory = mb(cfg.get("mem") or node.get("RealMemory"))
            used_memory = mb(alloc.get("mem") or node.get("AllocMem"))
            # Without slurmdbd, TRES leave GPUs out: the node's Gres and GresUsed tell.
            gpus = _int(cfg["gres/gpu"]) if "gres/gpu" in cfg else gres_gpus(node.get("Gres"))
            used_gpus = (
                _int(alloc["gres/gpu"]) if "gres/gpu" in alloc else gres_gpus(node.get("GresUsed"))
            )
            if not node_usable(node.get("State", "")):
                continue
            free_gpus += max(gpus - used_gpus, 0)
            free_cpus += max(cpus - used_cpus, 0)
            free_mb += max(memory - used_memory, 0.0)
            free_nodes += 1 if used_cpus == 0 and used_gpus == 0 else 0
        w = work.get(partition, _Work())
        pools.append(
            PoolCapacity(
                pool=pool.name,
                free_gpus=free_gpus,
                free_cpus=free_cpus,
                free_memory_bytes=int(free_mb * 1024**2),
                free_nodes=free_nodes,
                pending_gpu_seconds=w.pending_gpu_s,
                running_gpu_seconds_left=w.running_gpu_s,
                pending_cpu_seconds=w.pending_cpu_s,
                running_cpu_seconds_left=w.running_cpu_s,
            )
        )
    return SiteSnapshot(site, tuple(pools))
