"""What only a quantum task is checked for before it is queued: its program, shots, project.

``submit_job`` (and ``plan``) call ``checked`` on any spec with a ``quantum`` section, so a
task sent to ``/jobs`` as YAML is held to the same rules as one sent by ``grappe quantum run``.
"""

from __future__ import annotations

from grappe.domain.quantum import QuantumDevice
from grappe.quantum.programs import ProgramError, SdkMissing, read_program
from grappe.quantum.spec import QuantumSpec
from grappe.runtime import Factory
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, ServiceError
from grappe.spec.jobspec import JobSpec
from grappe.store import project_repo
from grappe.store import quantum as qstore
from grappe.store.tables import utcnow


class QuantumUnavailable(ServiceError):
    status = 503
    code = "quantum_unavailable"


def devices(factory: Factory) -> list[tuple[str, QuantumDevice]]:
    """Every quantum device of the federation with its site's name."""
    return [
        (site.name, pool.device)
        for site in factory.sites.values()
        for pool in site.pools
        if pool.device is not None
    ]


def site_and_device(backend: str) -> tuple[str | None, str]:
    """``site/device`` or ``device`` as written by a user."""
    site, _, device = backend.rpartition("/")
    return site or None, device


def _check_shots(factory: Factory, spec: QuantumSpec, site: str | None) -> None:
    """Refuse shots no device of the task's kind could take, before anything is queued."""
    fitting = [
        (s, d)
        for s, d in devices(factory)
        if d.modality == spec.modality
        and (spec.device is None or d.name == spec.device)
        and (site is None or s == site)
    ]
    if not fitting:
        wanted = spec.device or f"{spec.modality} device"
        names = ", ".join(f"{s}/{d.name}" for s, d in devices(factory)) or "none"
        raise Invalid("backend", wanted, f"no such quantum device here; choose one of: {names}")
    limit = max(d.max_shots for _, d in fitting)
    if spec.shots > limit:
        best = next(f"{s}/{d.name}" for s, d in fitting if d.max_shots == limit)
        raise Invalid(
            "shots",
            spec.shots,
            f"{best} takes at most {limit} shots per task; ask for {limit} or fewer, "
            "or split the task",
        )


def _check_allocation(factory: Factory, actor: Principal, project: str | None, shots: int) -> None:
    name = project or (next(iter(actor.projects)) if len(actor.projects) == 1 else None)
    if name is None:
        return  # submit_job asks which project
    with factory.store.session() as s:
        row = project_repo.project_by_name(s, name)
        if row is None:
            return
        bal = qstore.balance(s, row.id, utcnow())
    left = bal.shots_left
    if left is not None and shots > left:
        raise Conflict(
            f"project {name!r} has {max(left, 0)} of its {bal.qpu_shots} shots left; ask for "
            f"fewer or ask an operator for more (grappe quantum allocate {name} --shots N)",
            problems=[{"field": "shots", "value": shots, "message": "over the project's shots"}],
        )


def checked(factory: Factory, actor: Principal, spec: JobSpec, plan: bool = False) -> JobSpec:
    """``spec`` with its program read (its qubits filled in); ``ServiceError`` says what is wrong.

    ``plan`` skips the allocation check: a plan queues nothing.
    """
    task = spec.quantum
    assert task is not None
    allowed = spec.constraints.sites.allow
    _check_shots(factory, task, allowed[0] if len(allowed) == 1 else None)
    try:
        info = read_program(str(task.format), task.program)
    except ProgramError as exc:
        where = f"line {exc.line}, column {exc.column}" if exc.line is not None else None
        raise Invalid("program", where, f"not valid {task.format}: {exc}") from None
    except SdkMissing as exc:
        raise QuantumUnavailable(str(exc)) from None
    if not plan:
        _check_allocation(factory, actor, spec.project, task.shots)
    return spec.model_copy(update={"quantum": task.model_copy(update={"qubits": info.qubits})})
