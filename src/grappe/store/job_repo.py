"""Repositories of jobs and of the factory's own records: the SQL of running the work.

Jobs and their events (and a stored job as a domain ``Job``), the factory's id,
site outages and the attempts abandoned on them, uploaded job inputs, and the
scheduler's lease. People, projects, usage and the audit log are in
``grappe.store.project_repo``.

Functions take an open ``Session`` (one transaction, opened by the service)
so that a use case composes several of them atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grappe.domain.jobs import Job, JobRequest, JobState, Transition
from grappe.domain.quantum import need_of
from grappe.domain.resources import Resources
from grappe.store.tables import (
    AbandonedAttemptRow,
    JobEventRow,
    JobRow,
    LeaseRow,
    MetaRow,
    SiteOutageRow,
    UploadRow,
    utcnow,
)

# ---------------------------------------------------------------- jobs


def job_row(s: Session, job_id: int, lock: bool = False) -> JobRow | None:
    # populate_existing: a row changed by a compare-and-set in this session is read afresh.
    q = select(JobRow).where(JobRow.id == job_id).execution_options(populate_existing=True)
    if lock:
        q = q.with_for_update()
    return s.scalar(q)


def job_by_request_id(s: Session, owner_id: int, request_id: str) -> JobRow | None:
    return s.scalar(
        select(JobRow).where(JobRow.owner_id == owner_id, JobRow.client_request_id == request_id)
    )


def add_job(s: Session, row: JobRow, reason: str) -> JobRow:
    s.add(row)
    s.flush()
    add_event(s, row.id, JobState(row.state), reason, None, row.submitted_at)
    return row


def add_event(
    s: Session, job_id: int, state: JobState, reason: str, site: str | None, at: datetime
) -> None:
    s.add(JobEventRow(job_id=job_id, state=str(state), reason=reason, site=site, at=at))


def move_job(
    s: Session,
    job_id: int,
    expected: Sequence[JobState],
    new: JobState,
    reason: str,
    at: datetime,
    **fields: Any,
) -> bool:
    """Compare-and-set a job's state; ``False`` when another actor moved it first."""
    result = s.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.state.in_([str(e) for e in expected]))
        .values(state=str(new), reason=reason, updated_at=at, **fields)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(s, job_id, new, reason, fields.get("site"), at)
    return True


def set_job_fields(s: Session, job_id: int, **fields: Any) -> None:
    s.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(**fields)
        .execution_options(synchronize_session=False)
    )


def jobs_in_states(
    s: Session, states: Sequence[JobState], limit: int | None = None, skip_locked: bool = False
) -> list[JobRow]:
    q = select(JobRow).where(JobRow.state.in_([str(x) for x in states])).order_by(JobRow.id)
    if limit:
        q = q.limit(limit)
    if skip_locked:
        q = q.with_for_update(skip_locked=True)
    return list(s.scalars(q))


def list_jobs(
    s: Session,
    project_ids: Sequence[int] | None,
    states: Sequence[str] = (),
    owner_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[JobRow]:
    q = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
    if project_ids is not None:
        q = q.where(JobRow.project_id.in_(list(project_ids)))
    if states:
        q = q.where(JobRow.state.in_(list(states)))
    if owner_id is not None:
        q = q.where(JobRow.owner_id == owner_id)
    if before_id is not None:
        q = q.where(JobRow.id < before_id)
    return list(s.scalars(q))


def job_events(s: Session, job_id: int) -> list[Transition]:
    rows = s.scalars(
        select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
    )
    return [Transition(JobState(r.state), r.at, r.reason, r.site) for r in rows]


def to_job(row: JobRow, project: str, owner: str, history: list[Transition] | None = None) -> Job:
    """A stored job as a domain ``Job``."""
    spec = row.spec
    constraints = spec.get("constraints") or {}
    sites = constraints.get("sites") or {}
    gpus = (spec.get("resources") or {}).get("gpus") or {}
    request = JobRequest(
        id=str(row.id),
        project=project,
        resources=Resources(
            gpus=row.gpus,
            gpu_model=gpus.get("model"),
            cpus=row.cpus,
            memory_bytes=row.memory_bytes,
            nodes=(spec.get("resources") or {}).get("nodes", 1),
        ),
        max_runtime_s=row.max_runtime_s,
        objective=spec.get("objective", "time"),
        jurisdiction=constraints.get("jurisdiction"),
        certifications=tuple(constraints.get("certifications") or ()),
        sites_allow=tuple(sites.get("allow") or ()),
        sites_deny=tuple(sites.get("deny") or ()),
        max_price_eur_gpu_hour=constraints.get("max_price_eur_gpu_hour"),
        quantum=need_of(spec.get("quantum")),
        preemptible=bool(spec.get("preemptible", False)),
    )
    return Job(
        id=str(row.id),
        name=row.name,
        project=project,
        owner=owner,
        spec=spec,
        request=request,
        state=JobState(row.state),
        submitted_at=row.submitted_at,
        reason=row.reason,
        site=row.site,
        pool=row.pool,
        handle=row.handle,
        attempt=row.attempt,
        retries=row.retries,
        started_at=row.started_at,
        ended_at=row.ended_at,
        exit_code=row.exit_code,
        placement=row.placement,
        history=history or [],
    )


# ---------------------------------------------------------------- the factory itself


def factory_id(s: Session, new: str) -> str:
    """This factory's id, set once to ``new`` on first use (the first replica wins)."""
    row = s.get(MetaRow, "factory_id")
    if row is not None:
        return row.value
    try:
        with s.begin_nested():
            s.add(MetaRow(key="factory_id", value=new))
    except IntegrityError:
        row = s.get(MetaRow, "factory_id")
        assert row is not None
        return row.value
    return new


# ---------------------------------------------------------------- site outages


def mark_outage(s: Session, site: str, now: datetime, error: str) -> datetime:
    """Record that ``site`` does not answer; returns since when it has not."""
    row = s.get(SiteOutageRow, site)
    if row is None:
        s.add(SiteOutageRow(site=site, since=now, error=error[:2000]))
        s.flush()
        return now
    row.error = error[:2000]
    return row.since


def has_outage(s: Session, site: str) -> bool:
    return s.get(SiteOutageRow, site) is not None


def clear_outage(s: Session, site: str) -> bool:
    row = s.get(SiteOutageRow, site)
    if row is None:
        return False
    s.delete(row)
    return True


def add_abandoned(
    s: Session, site: str, job_id: int, attempt: int, handle: str | None, at: datetime
) -> None:
    s.add(AbandonedAttemptRow(site=site, job_id=job_id, attempt=attempt, handle=handle, at=at))


def abandoned_at(s: Session, site: str) -> list[AbandonedAttemptRow]:
    return list(s.scalars(select(AbandonedAttemptRow).where(AbandonedAttemptRow.site == site)))


def drop_abandoned(s: Session, row_id: int) -> None:
    row = s.get(AbandonedAttemptRow, row_id)
    if row is not None:
        s.delete(row)


# ---------------------------------------------------------------- uploads and leases


def add_upload(s: Session, sha256: str, owner_id: int, size: int) -> None:
    if s.get(UploadRow, sha256) is None:
        s.add(UploadRow(sha256=sha256, owner_id=owner_id, size=size, created_at=utcnow()))


def upload(s: Session, sha256: str) -> UploadRow | None:
    return s.get(UploadRow, sha256)


def take_lease(s: Session, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
    """Hold the named lease for ``ttl_s`` if it is free, expired, or ours already."""
    expires = now + timedelta(seconds=ttl_s)
    row = s.get(LeaseRow, name, with_for_update=True)
    if row is None:
        s.add(LeaseRow(name=name, holder=holder, expires_at=expires))
        s.flush()
        return True
    result = s.execute(
        update(LeaseRow)
        .where(
            LeaseRow.name == name,
            or_(LeaseRow.holder == holder, and_(LeaseRow.expires_at < now)),
        )
        .values(holder=holder, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
