"""Governance: who may read which dataset, and the requests, grants and refusals behind it.

``open`` data is readable by every member. ``restricted`` and ``health`` data
are read for a project that an operator granted access to: a member asks
(``request``), an operator ``grant``s (optionally until a date) or ``refuse``s,
and may ``revoke`` a grant later. Operators read everything they administer.
Every request, decision and read is written to the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from grappe.domain.datasets import Sensitivity
from grappe.domain.resources import parse_duration
from grappe.runtime import Factory
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Forbidden, Invalid, NotFound
from grappe.store import data_repo as dr
from grappe.store import project_repo
from grappe.store.tables import DataAccessRow, DatasetRow, utcnow

PENDING, GRANTED, REFUSED, REVOKED = "pending", "granted", "refused", "revoked"
STATES = (PENDING, GRANTED, REFUSED, REVOKED)


def request_view(row: DataAccessRow, project: str, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    expired = row.state == GRANTED and row.expires_at is not None and row.expires_at <= now
    return {
        "id": row.id,
        "dataset": row.dataset_id,
        "project": project,
        "requester": row.requester,
        "purpose": row.purpose,
        "state": "expired" if expired else row.state,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "reason": row.reason,
        "created_at": row.created_at.isoformat(),
    }


def project_refusal(s: Any, row: DatasetRow, project: str, now: datetime) -> str | None:
    """Why ``project`` may not read the dataset now, or ``None`` when it may."""
    if not Sensitivity(row.sensitivity).needs_grant:
        return None
    prow = project_repo.project_by_name(s, project)
    if prow is not None and dr.live_grant(s, row.id, prow.id, now) is not None:
        return None
    last = dr.last_decision(s, row.id, prow.id) if prow is not None else None
    ask = f'request it: grappe data request {row.id} --project {project} --purpose "..."'
    if last is None:
        why = "has no access"
    elif last.state == PENDING:
        return (
            f"{row.sensitivity} dataset {row.id}: project {project}'s request {last.id} "
            "awaits an operator"
        )
    elif last.state == GRANTED:
        why = (
            f"had access until {last.expires_at.isoformat() if last.expires_at else '?'} (expired)"
        )
    elif last.state == REVOKED:
        why = f"had its access revoked ({last.reason or 'no reason given'})"
    else:
        why = f"was refused access ({last.reason or 'no reason given'})"
    return f"{row.sensitivity} dataset {row.id}: project {project} {why}; {ask}"


def require_read(s: Any, actor: Principal, row: DatasetRow, project: str | None) -> str | None:
    """The project through which ``actor`` reads the dataset; ``Forbidden`` when none may."""
    now = utcnow()
    if not Sensitivity(row.sensitivity).needs_grant or actor.staff:
        return project
    if project is not None:
        if not actor.can_see(project):
            raise Forbidden(f"you are not a member of project {project}")
        why = project_refusal(s, row, project, now)
        if why:
            raise Forbidden(why)
        return project
    refusals = []
    for name in sorted(actor.projects):
        why = project_refusal(s, row, name, now)
        if why is None:
            return name
        refusals.append(why)
    raise Forbidden(
        "; ".join(refusals)
        or f"{row.sensitivity} dataset {row.id}: you belong to no project that could request it"
    )


def access_summary(s: Any, actor: Principal, row: DatasetRow) -> dict[str, Any]:
    """For ``show``: whether the caller may read it, and through which of their projects."""
    if not Sensitivity(row.sensitivity).needs_grant:
        return {"readable": True, "why": "open data: every member may read it"}
    if actor.staff:
        return {"readable": True, "why": "operators read the data they administer"}
    now = utcnow()
    projects = {p: project_refusal(s, row, p, now) for p in sorted(actor.projects)}
    granted = [p for p, why in projects.items() if why is None]
    return {
        "readable": bool(granted),
        "projects": granted,
        "why": "granted to " + ", ".join(granted)
        if granted
        else "; ".join(w for w in projects.values() if w) or "you belong to no project",
    }


def request_access(
    factory: Factory, actor: Principal, dataset_id: str, project: str, purpose: str
) -> dict[str, Any]:
    """Ask for a project's access to a restricted or health dataset."""
    from grappe.data.catalog import dataset_row

    purpose = purpose.strip()
    if len(purpose) < 10:
        raise Invalid(
            "purpose", purpose, "say in a sentence what the data is for (10 characters at least)"
        )
    with factory.store.session() as s:
        row = dataset_row(s, dataset_id)
        if not Sensitivity(row.sensitivity).needs_grant:
            raise Invalid("dataset", row.id, "open data needs no request: every member reads it")
        prow = project_repo.project_by_name(s, project)
        if prow is None or not actor.can_see(project):
            raise Invalid(
                "project", project, "no such project of yours; `grappe projects` lists them"
            )
        now = utcnow()
        if dr.live_grant(s, row.id, prow.id, now) is not None:
            raise Conflict(f"project {project} already has access to {row.id}")
        last = dr.last_decision(s, row.id, prow.id)
        if last is not None and last.state == PENDING:
            raise Conflict(f"project {project}'s request {last.id} for {row.id} awaits an operator")
        req = dr.add_access(
            s,
            DataAccessRow(
                dataset_id=row.id,
                project_id=prow.id,
                requester=actor.name,
                purpose=purpose,
                state=PENDING,
                reason="",
                created_at=now,
            ),
        )
        project_repo.audit(s, actor.name, "data.request", row.id, project=project, request=req.id)
        return request_view(req, project, now)


def list_requests(
    factory: Factory, actor: Principal, state: str | None = None, dataset_id: str | None = None
) -> list[dict[str, Any]]:
    """Requests (newest first): all for operators, their projects' for members."""
    if state is not None and state not in STATES:
        raise Invalid("state", state, f"use one of {', '.join(STATES)}")
    with factory.store.session() as s:
        ids = None if actor.staff else [p.id for p in project_repo.list_projects(s, actor.projects)]
        rows = dr.list_access(s, [state] if state else [], dataset_id, ids)
        now = utcnow()
        return [request_view(r, name, now) for r, name in rows]


def expiry(expires: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h`` (from now) or an ISO date/time (UTC when no zone) -> when it expires."""
    if not expires:
        return None
    try:
        return now + timedelta(seconds=parse_duration(expires))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(expires)
    except ValueError:
        raise Invalid(
            "expires", expires, "write a duration (30d, 12h) or a date (2027-06-30)"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=now.tzinfo)
    if when <= now:
        raise Invalid("expires", expires, "this is in the past; give a later date")
    return when


def _decided(
    factory: Factory,
    actor: Principal,
    request_id: int,
    wanted: str,
    new: str,
    reason: str,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    actor.require_staff(f"{'revoking' if new == REVOKED else 'deciding'} dataset access")
    now = utcnow()
    with factory.store.session() as s:
        row = dr.access(s, request_id, lock=True)
        if row is None:
            raise NotFound(
                f"access request {request_id} does not exist; see `grappe data requests`"
            )
        if row.state != wanted:
            raise Conflict(f"access request {request_id} is {row.state}, not {wanted}")
        row.state, row.decided_by, row.decided_at, row.reason = new, actor.name, now, reason
        if new == GRANTED:
            row.expires_at = expires_at
        projects, _ = project_repo.names_by_id(s, [row.project_id], [])
        project = projects[row.project_id]
        action = {GRANTED: "data.grant", REFUSED: "data.refuse", REVOKED: "data.revoke"}[new]
        project_repo.audit(
            s,
            actor.name,
            action,
            row.dataset_id,
            project=project,
            request=row.id,
            reason=reason,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        s.flush()
        return request_view(row, project, now)


def grant(
    factory: Factory,
    actor: Principal,
    request_id: int,
    expires: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Approve a pending request, until ``expires`` if given."""
    when = expiry(expires, utcnow())
    return _decided(factory, actor, request_id, PENDING, GRANTED, reason, when)


def refuse(factory: Factory, actor: Principal, request_id: int, reason: str) -> dict[str, Any]:
    """Refuse a pending request; the reason is shown to the project."""
    if not reason.strip():
        raise Invalid("reason", reason, "say why the request is refused; the project reads it")
    return _decided(factory, actor, request_id, PENDING, REFUSED, reason.strip())


def revoke(factory: Factory, actor: Principal, request_id: int, reason: str) -> dict[str, Any]:
    """Withdraw a grant: the project's next reads and jobs are refused."""
    if not reason.strip():
        raise Invalid("reason", reason, "say why access is revoked; the project reads it")
    return _decided(factory, actor, request_id, GRANTED, REVOKED, reason.strip())
