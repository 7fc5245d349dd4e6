"""Hard constraints: each filter returns ``None`` to keep a site or pool, or why it is dropped."""

from __future__ import annotations

from collections.abc import Callable

from grappe.domain.datasets import STAGING_ENGINES, site_refusal
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import format_memory
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot

SiteFilter = Callable[[JobRequest, SiteSnapshot], str | None]
PoolFilter = Callable[[JobRequest, Site, Pool], str | None]


def site_answers(job: JobRequest, snap: SiteSnapshot) -> str | None:
    if not snap.available:
        return (
            f"site is not answering ({snap.error or 'no reply'}); jobs go elsewhere until it does"
        )
    return None


def allowed_sites(job: JobRequest, snap: SiteSnapshot) -> str | None:
    name = snap.site.name
    if job.sites_allow and name not in job.sites_allow:
        return f"not in constraints.sites.allow {list(job.sites_allow)}"
    if name in job.sites_deny:
        return "listed in constraints.sites.deny"
    return None


def jurisdiction(job: JobRequest, snap: SiteSnapshot) -> str | None:
    wanted = job.jurisdiction
    if not wanted:
        return None
    site = snap.site
    if wanted.upper() in (site.jurisdiction.upper(), site.country.upper()):
        return None
    return (
        f"jurisdiction {site.jurisdiction} (country {site.country}) does not satisfy "
        f"constraints.jurisdiction {wanted}"
    )


def certifications(job: JobRequest, snap: SiteSnapshot) -> str | None:
    held = {c.lower() for c in snap.site.certifications}
    missing = [c for c in job.certifications if c.lower() not in held]
    if missing:
        have = ", ".join(snap.site.certifications) or "none"
        return f"lacks certification {', '.join(missing)} (holds: {have})"
    return None


def member_account(job: JobRequest, snap: SiteSnapshot) -> str | None:
    site = snap.site
    if site.requires_member_account and site.name not in job.site_accounts:
        return (
            "runs jobs only under your own account there; register it: "
            f"grappe accounts add {site.name} --user NAME --key PATH"
        )
    return None


def data_rules(job: JobRequest, snap: SiteSnapshot) -> str | None:
    """Inputs may go only where their sensitivity allows (HDS for health, the publisher's list)."""
    site = snap.site
    if job.inputs and site.backend not in STAGING_ENGINES:
        return f"its engine ({site.backend}) cannot stage the job's datasets yet"
    return next(
        (why for n in job.inputs if (why := site_refusal(n, site.name, site.certifications))),
        None,
    )


def gpu_model(job: JobRequest, site: Site, pool: Pool) -> str | None:
    r = job.resources
    if r.gpus == 0:
        return None
    if not pool.gpus_per_node:
        return f"pool {pool.name} has no GPUs; the job asks for {r.gpus}"
    if r.gpu_model and pool.gpu_model != r.gpu_model:
        return f"pool {pool.name} has {pool.gpu_model} GPUs; the job asks for {r.gpu_model}"
    return None


def size(job: JobRequest, site: Site, pool: Pool) -> str | None:
    """Drop pools that could never run the job, even empty."""
    r = job.resources
    per = r.per_node()
    if r.nodes > pool.nodes:
        return f"pool {pool.name} has {pool.nodes} nodes; the job asks for {r.nodes}"
    if per.gpus > pool.gpus_per_node and pool.gpus_per_node:
        return (
            f"pool {pool.name} has {pool.gpus_per_node} GPUs per node; the job needs "
            f"{per.gpus} on each of {r.nodes} node(s)"
        )
    if per.cpus > pool.cpus_per_node:
        return (
            f"pool {pool.name} has {pool.cpus_per_node} CPUs per node; the job needs "
            f"{per.cpus} on each of {r.nodes} node(s)"
        )
    if per.memory_bytes > pool.memory_bytes_per_node:
        return (
            f"pool {pool.name} has {format_memory(pool.memory_bytes_per_node)} of memory per "
            f"node; the job needs {format_memory(per.memory_bytes)} on each node"
        )
    return None


def price(job: JobRequest, site: Site, pool: Pool) -> str | None:
    cap = job.max_price_eur_gpu_hour
    if cap is None or job.resources.gpus == 0:
        return None
    if pool.price_eur_gpu_hour > cap:
        return (
            f"pool {pool.name} costs {pool.price_eur_gpu_hour:g} EUR per GPU-hour, over "
            f"constraints.max_price_eur_gpu_hour {cap:g}"
        )
    return None


def quantum_device(job: JobRequest, site: Site, pool: Pool) -> str | None:
    """A quantum task goes to a device of its modality that holds its program and its shots."""
    need, device = job.quantum, pool.device
    if need is None:
        if device is not None:
            return f"pool {pool.name} is a quantum device; it runs quantum tasks only"
        return None
    if device is None:
        return f"pool {pool.name} is not a quantum device"
    if need.device and need.device != device.name:
        return f"device {device.name} is not the device asked for ({need.device})"
    if need.modality != device.modality:
        return f"device {device.name} is {device.modality}; the task is {need.modality}"
    unit = "modes" if device.modality == "photonic" else "qubits"
    if need.qubits > device.qubits:
        return f"device {device.name} has {device.qubits} {unit}; the program uses {need.qubits}"
    if need.shots > device.max_shots:
        return (
            f"device {device.name} takes at most {device.max_shots} shots; the task asks for "
            f"{need.shots} (lower quantum.shots or split the task)"
        )
    return None


def session(job: JobRequest, pool: Pool, cap: PoolCapacity) -> str | None:
    """A device reserved for another project's session is not free for this one."""
    if cap.reserved_for and cap.reserved_for != job.project:
        return f"device {pool.name} is reserved for project {cap.reserved_for}'s session now"
    return None


# The account check comes first: a site that only members with an account may use cannot be
# read until one registers, and "register your account" is the reason that helps.
SITE_FILTERS: tuple[SiteFilter, ...] = (
    member_account,
    site_answers,
    allowed_sites,
    jurisdiction,
    certifications,
    data_rules,
)
POOL_FILTERS: tuple[PoolFilter, ...] = (gpu_model, size, price, quantum_device)
