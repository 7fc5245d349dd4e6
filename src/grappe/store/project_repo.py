"""Repositories of people and projects: every SQL statement about who may run what.

Users and their tokens, projects, members and allocations, the usage charged
to projects, members' accounts on sites, and the audit log of who did what.
Jobs and the factory's own records are in ``grappe.store.job_repo``.

Functions take an open ``Session`` (one transaction, opened by the service)
so that a use case composes several of them atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grappe.domain.projects import Allocation, Balance, Role, Usage
from grappe.store.tables import (
    AllocationRow,
    AuditRow,
    MemberRow,
    ProjectRow,
    SiteAccountRow,
    TokenRow,
    UsageRow,
    UserRow,
    utcnow,
)

# ---------------------------------------------------------------- users and tokens


def user_by_name(s: Session, name: str) -> UserRow | None:
    return s.scalar(select(UserRow).where(UserRow.name == name))


def add_user(s: Session, name: str, role: Role) -> UserRow:
    row = UserRow(name=name, role=str(role), created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def add_token(s: Session, user_id: int, token_hash: str, label: str = "") -> TokenRow:
    row = TokenRow(user_id=user_id, token_hash=token_hash, label=label, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def user_by_token_hash(s: Session, token_hash: str) -> UserRow | None:
    return s.scalar(
        select(UserRow)
        .join(TokenRow, TokenRow.user_id == UserRow.id)
        .where(TokenRow.token_hash == token_hash, TokenRow.revoked_at.is_(None))
    )


def list_users(s: Session) -> list[UserRow]:
    return list(s.scalars(select(UserRow).order_by(UserRow.name)))


# ---------------------------------------------------------------- projects, allocations and usage


def project_by_name(s: Session, name: str) -> ProjectRow | None:
    return s.scalar(select(ProjectRow).where(ProjectRow.name == name))


def add_project(s: Session, name: str, description: str = "", priority: int = 0) -> ProjectRow:
    row = ProjectRow(name=name, description=description, priority=priority, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def add_member(s: Session, project_id: int, user_id: int) -> None:
    if s.get(MemberRow, (project_id, user_id)) is None:
        s.add(MemberRow(project_id=project_id, user_id=user_id))
        s.flush()


def member_projects(s: Session, user_id: int) -> list[str]:
    return list(
        s.scalars(
            select(ProjectRow.name)
            .join(MemberRow, MemberRow.project_id == ProjectRow.id)
            .where(MemberRow.user_id == user_id)
            .order_by(ProjectRow.name)
        )
    )


def project_members(s: Session, project_id: int) -> list[str]:
    return list(
        s.scalars(
            select(UserRow.name)
            .join(MemberRow, MemberRow.user_id == UserRow.id)
            .where(MemberRow.project_id == project_id)
            .order_by(UserRow.name)
        )
    )


def list_projects(s: Session, names: Iterable[str] | None = None) -> list[ProjectRow]:
    q = select(ProjectRow).order_by(ProjectRow.name)
    if names is not None:
        q = q.where(ProjectRow.name.in_(list(names)))
    return list(s.scalars(q))


def add_allocation(
    s: Session,
    project_id: int,
    gpu_hours: float,
    cpu_hours: float,
    starts: datetime,
    ends: datetime,
) -> AllocationRow:
    row = AllocationRow(
        project_id=project_id,
        gpu_hours=gpu_hours,
        cpu_hours=cpu_hours,
        starts=starts,
        ends=ends,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def current_allocation(s: Session, project_id: int, now: datetime) -> Allocation | None:
    """The newest allocation covering ``now``, or else the newest one (to explain why not)."""
    rows = s.scalars(
        select(AllocationRow)
        .where(AllocationRow.project_id == project_id)
        .order_by(AllocationRow.created_at.desc(), AllocationRow.id.desc())
    ).all()
    row = next((r for r in rows if r.starts <= now < r.ends), rows[0] if rows else None)
    if row is None:
        return None
    return Allocation(row.gpu_hours, row.cpu_hours, row.starts, row.ends)


def usage_between(s: Session, project_id: int, starts: datetime, ends: datetime) -> Usage:
    row = s.execute(
        select(
            func.coalesce(func.sum(UsageRow.gpu_hours), 0.0),
            func.coalesce(func.sum(UsageRow.cpu_hours), 0.0),
            func.coalesce(func.sum(UsageRow.eur), 0.0),
            func.coalesce(func.sum(UsageRow.kg_co2), 0.0),
            func.count(func.distinct(UsageRow.job_id)),
        ).where(UsageRow.project_id == project_id, UsageRow.at >= starts, UsageRow.at < ends)
    ).one()
    return Usage(float(row[0]), float(row[1]), float(row[2]), float(row[3]), int(row[4]))


def balance(s: Session, project_id: int, now: datetime) -> Balance:
    alloc = current_allocation(s, project_id, now)
    if alloc is None:
        return Balance(None, Usage())
    return Balance(alloc, usage_between(s, project_id, alloc.starts, alloc.ends))


def add_usage(
    s: Session,
    project_id: int,
    job_id: int,
    attempt: int,
    site: str,
    gpu_hours: float,
    cpu_hours: float,
    eur: float,
    kg_co2: float,
    at: datetime,
) -> bool:
    """Charge one attempt once; ``False`` if it was already charged."""
    exists = s.scalar(
        select(UsageRow.id).where(UsageRow.job_id == job_id, UsageRow.attempt == attempt)
    )
    if exists is not None:
        return False
    row = UsageRow(
        project_id=project_id,
        job_id=job_id,
        attempt=attempt,
        site=site,
        gpu_hours=gpu_hours,
        cpu_hours=cpu_hours,
        eur=eur,
        kg_co2=kg_co2,
        at=at,
    )
    try:
        # Two actors may end the same attempt at once (a cancel and the loop): one charge wins.
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        return False
    return True


def usage_by_project_site(
    s: Session, project_ids: Sequence[int] | None, since: datetime | None
) -> list[dict[str, Any]]:
    q = (
        select(
            ProjectRow.name,
            UsageRow.site,
            func.sum(UsageRow.gpu_hours),
            func.sum(UsageRow.cpu_hours),
            func.sum(UsageRow.eur),
            func.sum(UsageRow.kg_co2),
            func.count(func.distinct(UsageRow.job_id)),
        )
        .join(ProjectRow, ProjectRow.id == UsageRow.project_id)
        .group_by(ProjectRow.name, UsageRow.site)
        .order_by(ProjectRow.name, UsageRow.site)
    )
    if project_ids is not None:
        q = q.where(UsageRow.project_id.in_(list(project_ids)))
    if since is not None:
        q = q.where(UsageRow.at >= since)
    return [
        {
            "project": r[0],
            "site": r[1],
            "gpu_hours": float(r[2]),
            "cpu_hours": float(r[3]),
            "eur": float(r[4]),
            "kg_co2": float(r[5]),
            "jobs": int(r[6]),
        }
        for r in s.execute(q)
    ]


def names_by_id(
    s: Session, project_ids: Iterable[int], user_ids: Iterable[int]
) -> tuple[dict, dict]:
    projects = dict(
        s.execute(
            select(ProjectRow.id, ProjectRow.name).where(ProjectRow.id.in_(set(project_ids)))
        ).all()
    )
    users = dict(
        s.execute(select(UserRow.id, UserRow.name).where(UserRow.id.in_(set(user_ids)))).all()
    )
    return projects, users


# ---------------------------------------------------------------- members' site accounts


def site_account(s: Session, user_id: int, site: str) -> SiteAccountRow | None:
    return s.scalar(
        select(SiteAccountRow).where(SiteAccountRow.user_id == user_id, SiteAccountRow.site == site)
    )


def site_account_by_remote(s: Session, site: str, remote_user: str | None) -> SiteAccountRow | None:
    """The account with that user name on ``site`` (``None``: the newest of any member)."""
    q = select(SiteAccountRow).where(SiteAccountRow.site == site)
    if remote_user is not None:
        q = q.where(SiteAccountRow.remote_user == remote_user)
    return s.scalar(q.order_by(SiteAccountRow.id.desc()).limit(1))


def site_accounts_of(s: Session, user_ids: Iterable[int]) -> dict[int, set[str]]:
    """The sites where each of these members has registered an account."""
    out: dict[int, set[str]] = {}
    rows = s.execute(
        select(SiteAccountRow.user_id, SiteAccountRow.site).where(
            SiteAccountRow.user_id.in_(set(user_ids))
        )
    )
    for user_id, site in rows:
        out.setdefault(user_id, set()).add(site)
    return out


def list_site_accounts(s: Session, user_id: int | None) -> list[tuple[str, SiteAccountRow]]:
    q = (
        select(UserRow.name, SiteAccountRow)
        .join(UserRow, UserRow.id == SiteAccountRow.user_id)
        .order_by(UserRow.name, SiteAccountRow.site)
    )
    if user_id is not None:
        q = q.where(SiteAccountRow.user_id == user_id)
    return [(name, row) for name, row in s.execute(q)]


def put_site_account(
    s: Session, user_id: int, site: str, remote_user: str, key_path: str | None
) -> SiteAccountRow:
    row = site_account(s, user_id, site)
    if row is None:
        row = SiteAccountRow(user_id=user_id, site=site, created_at=utcnow(), remote_user="")
        s.add(row)
    row.remote_user = remote_user
    row.key_path = key_path
    s.flush()
    return row


def delete_site_account(s: Session, user_id: int, site: str) -> bool:
    row = site_account(s, user_id, site)
    if row is None:
        return False
    s.delete(row)
    return True


# ---------------------------------------------------------------- audit log


def audit(s: Session, actor: str, action: str, target: str = "", **detail: Any) -> None:
    s.add(AuditRow(at=utcnow(), actor=actor, action=action, target=target, detail=detail))


def audit_log(s: Session, limit: int = 100, action: str | None = None) -> list[AuditRow]:
    query = select(AuditRow)
    if action:
        query = query.where(AuditRow.action.startswith(action, autoescape=True))
    return list(s.scalars(query.order_by(AuditRow.id.desc()).limit(limit)))
