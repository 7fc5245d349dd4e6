"""Projects, allocations and usage: what each project was granted and what it has used."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, NotFound
from grappe.spec.jobspec import NAME_RE
from grappe.store import gateway as store_gw
from grappe.store import project_repo
from grappe.store.db import Store
from grappe.store.tables import utcnow

DEFAULT_PERIOD_DAYS = 365


def _project_view(s: Any, row: Any, now: datetime) -> dict[str, Any]:
    bal = project_repo.balance(s, row.id, now)
    alloc = bal.allocation
    return {
        "name": row.name,
        "description": row.description,
        "priority": row.priority,
        "members": project_repo.project_members(s, row.id),
        "allocation": None
        if alloc is None
        else {
            "gpu_hours": alloc.gpu_hours,
            "cpu_hours": alloc.cpu_hours,
            "starts": alloc.starts.isoformat(),
            "ends": alloc.ends.isoformat(),
        },
        "used": {
            "gpu_hours": round(bal.usage.gpu_hours, 6),
            "cpu_hours": round(bal.usage.cpu_hours, 6),
            "eur": round(bal.usage.eur, 4),
            "kg_co2": round(bal.usage.kg_co2, 6),
            "jobs": bal.usage.jobs,
            "tokens": store_gw.tokens_used(s, row.id),
        },
        "left": {
            "gpu_hours": round(bal.gpu_hours_left, 6),
            "cpu_hours": round(bal.cpu_hours_left, 6),
        },
    }


def create_project(
    store: Store,
    actor: Principal,
    name: str,
    gpu_hours: float,
    cpu_hours: float,
    days: int = DEFAULT_PERIOD_DAYS,
    description: str = "",
    priority: int = 0,
    members: list[str] | None = None,
) -> dict[str, Any]:
    actor.require_staff("creating projects")
    if not NAME_RE.match(name):
        raise Invalid("name", name, "use letters, digits, '.', '_' and '-' (63 at most)")
    _check_hours(gpu_hours, cpu_hours, days)
    now = utcnow()
    with store.session() as s:
        if project_repo.project_by_name(s, name):
            raise Conflict(f"project {name!r} exists already; use `grappe projects allocate`")
        row = project_repo.add_project(s, name, description, priority)
        project_repo.add_allocation(
            s, row.id, gpu_hours, cpu_hours, now, now + timedelta(days=days)
        )
        for member in [actor.name, *(members or [])]:
            user = project_repo.user_by_name(s, member)
            if user is None:
                raise Invalid(
                    "members", member, "no such user; create it with `grappe users create`"
                )
            project_repo.add_member(s, row.id, user.id)
        project_repo.audit(
            s, actor.name, "project.create", name, gpu_hours=gpu_hours, cpu_hours=cpu_hours
        )
        return _project_view(s, row, now)


def allocate(
    store: Store, actor: Principal, name: str, gpu_hours: float, cpu_hours: float, days: int
) -> dict[str, Any]:
    """Grant a new allocation from now; it replaces the current one (usage restarts from now)."""
    actor.require_staff("granting allocations")
    _check_hours(gpu_hours, cpu_hours, days)
    now = utcnow()
    with store.session() as s:
        row = project_repo.project_by_name(s, name)
        if row is None:
            raise NotFound(f"project {name!r} does not exist; see `grappe projects`")
        project_repo.add_allocation(
            s, row.id, gpu_hours, cpu_hours, now, now + timedelta(days=days)
        )
        project_repo.audit(
            s, actor.name, "project.allocate", name, gpu_hours=gpu_hours, cpu_hours=cpu_hours
        )
        return _project_view(s, row, now)


def add_member(store: Store, actor: Principal, project: str, user: str) -> dict[str, Any]:
    actor.require_staff("adding members")
    with store.session() as s:
        row = project_repo.project_by_name(s, project)
        if row is None:
            raise NotFound(f"project {project!r} does not exist")
        u = project_repo.user_by_name(s, user)
        if u is None:
            raise Invalid("user", user, "no such user; create it with `grappe users create`")
        project_repo.add_member(s, row.id, u.id)
        project_repo.audit(s, actor.name, "project.add_member", project, user=user)
        return _project_view(s, row, utcnow())


def list_projects(store: Store, actor: Principal) -> list[dict[str, Any]]:
    now = utcnow()
    with store.session() as s:
        rows = project_repo.list_projects(s, None if actor.staff else actor.projects)
        return [_project_view(s, r, now) for r in rows]


def get_project(store: Store, actor: Principal, name: str) -> dict[str, Any]:
    if not actor.can_see(name):
        raise NotFound(f"project {name!r} does not exist or you are not a member")
    with store.session() as s:
        row = project_repo.project_by_name(s, name)
        if row is None:
            raise NotFound(f"project {name!r} does not exist")
        return _project_view(s, row, utcnow())


def usage_report(store: Store, actor: Principal, project: str | None = None) -> dict[str, Any]:
    """Usage by project and site, tokens by project and model, and each project's balance."""
    now = utcnow()
    with store.session() as s:
        if project is not None and not actor.can_see(project):
            raise NotFound(f"project {project!r} does not exist or you are not a member")
        names = [project] if project else (None if actor.staff else sorted(actor.projects))
        rows = project_repo.list_projects(s, names)
        ids = [r.id for r in rows]
        return {
            "by_site": project_repo.usage_by_project_site(s, ids, None),
            "by_model": store_gw.token_usage(s, ids),
            "projects": [_project_view(s, r, now) for r in rows],
        }


def _check_hours(gpu_hours: float, cpu_hours: float, days: int) -> None:
    if gpu_hours < 0:
        raise Invalid("gpu_hours", gpu_hours, "must be zero or more")
    if cpu_hours < 0:
        raise Invalid("cpu_hours", cpu_hours, "must be zero or more")
    if days <= 0:
        raise Invalid("days", days, "the allocation period must be at least one day")
