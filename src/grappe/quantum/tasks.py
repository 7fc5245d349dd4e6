"""Quantum use cases: list devices, submit a task, read its result, sessions, shot allocations.

A task is submitted as a job (``services.jobs.submit_job``) whose spec holds a
``quantum`` section, so it shares the queue, placement, ledger and audit of
every job; ``quantum.checks`` holds what only a quantum task is checked for.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from grappe.quantum.checks import devices, site_and_device
from grappe.quantum.spec import QuantumSpec
from grappe.runtime import Factory
from grappe.services import jobs
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, NotFound
from grappe.spec.jobspec import JobSpec
from grappe.store import job_repo, project_repo
from grappe.store import quantum as qstore
from grappe.store.tables import utcnow


def backends(factory: Factory) -> list[dict[str, Any]]:
    """The devices as users compare them: modality, size, shots, price, jurisdiction."""
    views = []
    for site_name, d in devices(factory):
        site = factory.sites[site_name]
        views.append(
            {
                "backend": f"{site_name}/{d.name}",
                "site": site_name,
                "device": d.name,
                "modality": d.modality,
                "qubits": d.qubits,
                "unit": "modes" if d.modality == "photonic" else "qubits",
                "connectivity": d.connectivity,
                "max_shots": d.max_shots,
                "price_eur_per_shot": d.price_eur_per_shot,
                "price_eur_per_second": d.price_eur_per_second,
                "jurisdiction": site.jurisdiction,
                "country": site.country,
                "emulator": d.emulator,
                "engine": d.engine,
            }
        )
    return views


def _site_and_device(factory: Factory, backend: str) -> tuple[str | None, str]:
    """``site/device`` or ``device`` as written by a user."""
    site, _, device = backend.rpartition("/")
    return site or None, device


def submit(
    factory: Factory,
    actor: Principal,
    body: dict[str, Any],
    request_id: str | None = None,
) -> dict[str, Any]:
    """Queue a quantum task (``body``: program, format, shots, modality, backend, project, name).

    The program is read and its shots checked by ``submit_job`` (``quantum.checks``), as for
    a job spec with a ``quantum`` section sent to ``/jobs``.
    """
    backend = body.get("backend")
    site, device = site_and_device(backend) if backend else (None, None)
    section = {k: body[k] for k in ("program", "format", "shots", "modality") if k in body}
    if device:
        section["device"] = device
    try:
        spec = QuantumSpec.model_validate(section)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "program"
        shown = first.get("input") if field != "program" else None
        raise Invalid(field, shown, first["msg"].removeprefix("Value error, ")) from None
    job_spec = JobSpec(
        name=body.get("name") or f"quantum-{spec.format}",
        project=body.get("project"),
        quantum=spec,
        constraints={"sites": {"allow": [site]}} if site else {},  # type: ignore[arg-type]
    )
    view, _ = jobs.submit_job(factory, actor, job_spec, request_id)
    return view


def result(factory: Factory, actor: Principal, job_id: int) -> dict[str, Any]:
    """The task, its counts once it ended, and what it was charged."""
    job = jobs.get_job(factory, actor, job_id)
    spec = job.get("spec") or {}
    if not spec.get("quantum"):
        raise NotFound(f"job {job_id} is not a quantum task; see `grappe job {job_id}`")
    with factory.store.session() as s:
        stored = qstore.result(s, job_id)
        usage = qstore.job_usage(s, job_id)
        row = job_repo.job_row(s, job_id)
        handle = row.handle if row is not None else None
    stored = stored or {}
    error = None
    if job["state"] == "FAILED" and handle and job["site"] in factory.backends:
        error = _failure(factory.backends[job["site"]].logs(handle))
    section = spec["quantum"]
    return {
        "id": job["id"],
        "state": job["state"],
        "reason": job["reason"],
        "project": job["project"],
        "backend": f"{job['site']}/{job['pool']}" if job["site"] else None,
        "format": section.get("format"),
        "modality": section.get("modality"),
        "qubits": section.get("qubits"),
        "shots": section.get("shots"),
        "counts": stored.get("counts"),
        "seconds": stored.get("seconds"),
        "error": error,
        "charged": {
            "qpu_shots": sum(u.qpu_shots for u in usage),
            "qpu_seconds": round(sum(u.qpu_seconds for u in usage), 6),
            "eur": round(sum(u.eur for u in usage), 6),
        },
    }


def _failure(log: bytes) -> str | None:
    """The line in which the emulator said why the task failed, if it did."""
    lines = log.decode(errors="replace").splitlines()
    return next((ln for ln in reversed(lines) if ln.startswith("grappe: the quantum task")), None)


def allocate(
    factory: Factory, actor: Principal, project: str, shots: int, seconds: float, days: int
) -> dict[str, Any]:
    """Grant ``project`` shots and QPU-seconds from now for ``days`` days (operators)."""
    actor.require_staff("granting quantum allocations")
    if shots < 0 or seconds < 0 or not 1 <= days <= 3660:
        raise Invalid("shots", shots, "shots and seconds are 0 or more, days 1 to 3660")
    now = utcnow()
    with factory.store.session() as s:
        row = project_repo.project_by_name(s, project)
        if row is None:
            raise NotFound(f"project {project!r} does not exist; see `grappe projects`")
        qstore.add_allocation(s, row.id, shots, seconds, now, now + timedelta(days=days))
        project_repo.audit(s, actor.name, "quantum.allocate", project, shots=shots, seconds=seconds)
        bal = qstore.balance(s, row.id, now)
    return {
        "project": project,
        "qpu_shots": bal.qpu_shots,
        "qpu_seconds": bal.qpu_seconds,
        "used_shots": bal.used_shots,
        "used_seconds": bal.used_seconds,
    }


def session_view(s: Any) -> dict[str, Any]:
    return {
        "id": s.id,
        "project": s.project,
        "backend": f"{s.site}/{s.device}",
        "starts": s.starts.isoformat(),
        "ends": s.ends.isoformat(),
    }


def create_session(
    factory: Factory,
    actor: Principal,
    project: str,
    backend: str,
    starts: datetime,
    minutes: int,
) -> dict[str, Any]:
    """Reserve a device for ``project`` from ``starts`` for ``minutes`` minutes."""
    if not actor.can_see(project):
        raise Invalid("project", project, "you are not a member of this project")
    if not 1 <= minutes <= 7 * 24 * 60:
        raise Invalid("minutes", minutes, "a session lasts 1 minute to 7 days")
    site, device = site_and_device(backend)
    matches = [s for s, d in devices(factory) if d.name == device and site in (None, s)]
    if len(matches) != 1:
        names = ", ".join(f"{s}/{d.name}" for s, d in devices(factory)) or "none"
        raise Invalid("backend", backend, f"name one quantum device: {names}")
    quantum = factory.backends[matches[0]]
    try:
        made = quantum.reserve(project, device, starts, starts + timedelta(minutes=minutes))  # type: ignore[attr-defined]
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    with factory.store.session() as s:
        project_repo.audit(
            s, actor.name, "quantum.session", made.id, project=project, backend=backend
        )
    return session_view(made)


def list_sessions(factory: Factory, actor: Principal) -> list[dict[str, Any]]:
    found = []
    for name in {s for s, _ in devices(factory)}:
        for sess in factory.backends[name].sessions():  # type: ignore[attr-defined]
            if actor.staff or actor.can_see(sess.project):
                found.append(session_view(sess))
    return sorted(found, key=lambda v: (v["starts"], v["backend"]))
