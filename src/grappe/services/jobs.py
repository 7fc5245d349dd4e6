"""Job use cases: submit, plan, list, show, cancel, logs.

Authorisation is checked here, once for every edge: a member acts on their
projects' jobs only; operators and admins on all. A job the caller may not
see is reported as not found, so ids of other projects leak nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from grappe.backends import SiteUnavailable
from grappe.data.inputs import pin_inputs, with_needs
from grappe.domain.jobs import Job, JobState
from grappe.placement import place
from grappe.placement.declared import declared_snapshots
from grappe.quantum import checks as quantum_checks
from grappe.runtime import Factory
from grappe.scheduler.loop import reconcile_job
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, NotFound, ServiceError
from grappe.spec.jobspec import JobSpec
from grappe.store import job_repo, project_repo
from grappe.store.tables import JobRow, utcnow

UPLOAD_PREFIX = "upload:"


class Unplaceable(ServiceError):
    """No declared site could ever run the job as written (422)."""

    status = 422
    code = "unplaceable"


def job_view(job: Job, detail: bool = False) -> dict[str, Any]:
    """A job as the API returns it; ``detail`` adds spec, placement and history."""
    view: dict[str, Any] = {
        "id": int(job.id),
        "name": job.name,
        "project": job.project,
        "owner": job.owner,
        "state": str(job.state),
        "reason": job.reason,
        "site": job.site,
        "pool": job.pool,
        "resources": job.request.resources.describe(),
        "gpus": job.request.resources.gpus,
        "attempt": job.attempt,
        "submitted_at": job.submitted_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "exit_code": job.exit_code,
    }
    if detail:
        view["spec"] = job.spec
        view["placement"] = job.placement
        view["history"] = [
            {"state": str(t.state), "at": t.at.isoformat(), "reason": t.reason, "site": t.site}
            for t in job.history
        ]
    return view


def resolve_project(actor: Principal, project: str | None, known: bool) -> str:
    """The project a job is charged to, checked against the caller's membership."""
    if project is None:
        if len(actor.projects) == 1:
            return next(iter(actor.projects))
        choices = ", ".join(sorted(actor.projects)) or "none"
        raise Invalid("project", None, f"say which project to charge (you are in: {choices})")
    if not known:
        raise Invalid("project", project, "no such project; `grappe projects` lists yours")
    if not actor.can_see(project):
        raise Invalid("project", project, "you are not a member of this project; ask its owner")
    return project


def _request(factory: Factory, actor: Principal, spec: JobSpec, job_id: str, project: str) -> Any:
    """The job as placement sees it, with the sites where the caller has an account."""
    with factory.store.session() as s:
        sites = project_repo.site_accounts_of(s, [actor.user_id]).get(actor.user_id, set())
    request = replace(spec.to_request(job_id, project), site_accounts=frozenset(sites))
    return with_needs(factory, request, spec.inputs)


def plan(factory: Factory, actor: Principal, spec: JobSpec) -> dict[str, Any]:
    """Where the job would run now and why, without submitting it."""
    if spec.quantum is not None:
        spec = quantum_checks.checked(factory, actor, spec, plan=True)
    project = next(iter(actor.projects)) if len(actor.projects) == 1 else ""
    if spec.project is not None:  # another project's plan would show its sites and accounts
        with factory.store.session() as s:
            known = project_repo.project_by_name(s, spec.project) is not None
        project = resolve_project(actor, spec.project, known)
    request = _request(factory, actor, spec, "plan", project)
    return place(request, factory.snapshots(), factory.gpus).as_dict()


def submit_job(
    factory: Factory,
    actor: Principal,
    spec: JobSpec,
    request_id: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a job; returns (job, created). The same ``request_id`` returns the first job."""
    store = factory.store
    if request_id is not None and not (0 < len(request_id) <= 128):
        raise Invalid("request_id", request_id, "use 1 to 128 characters, e.g. a UUID")
    with store.session() as s:
        if request_id:
            existing = job_repo.job_by_request_id(s, actor.user_id, request_id)
            if existing is not None:
                return _view(s, existing), False
        known = (
            spec.project is not None and project_repo.project_by_name(s, spec.project) is not None
        )
    project = resolve_project(actor, spec.project, known)
    if spec.quantum is not None:  # its program read, its shots and its project's shots checked
        spec = quantum_checks.checked(factory, actor, spec.model_copy(update={"project": project}))
    upload = _check_workdir(factory, spec)
    if spec.inputs:
        # Access is checked now and the versions pinned: a later upload never changes this job.
        spec = spec.model_copy(update={"inputs": pin_inputs(factory, project, spec.inputs)})
    # Could any declared site ever run it? Asked of the sites as declared, not of their engines:
    # a submission must not wait on every site's scontrol or SSH round trip.
    placement = place(
        _request(factory, actor, spec, "new", project),
        declared_snapshots(list(factory.sites.values())),
        factory.gpus,
    )
    if not placement.candidates:
        raise Unplaceable(
            placement.summary(),
            problems=[
                {"field": "placement", "value": f"{r.site}/{r.pool or '*'}", "message": r.reason}
                for r in placement.rejected
            ]
            or [{"field": "placement", "value": None, "message": "no site is declared"}],
        )
    now = utcnow()
    resources = spec.resources.to_domain()
    data = spec.model_dump(mode="json", exclude_none=True)
    data["project"] = project
    try:
        with store.session() as s:
            prow = project_repo.project_by_name(s, project)
            assert prow is not None
            held = project_repo.balance(s, prow.id, now).refusal(project, resources.gpus, now)
            row = JobRow(
                name=spec.name,
                project_id=prow.id,
                owner_id=actor.user_id,
                client_request_id=request_id,
                spec=data,
                state=str(JobState.PENDING),
                reason=f"held: {held}" if held else "queued",
                gpus=resources.gpus,
                cpus=resources.cpus,
                memory_bytes=resources.memory_bytes,
                max_runtime_s=spec.max_runtime_s,
                workdir_upload=upload,
                retries=0,
                attempt=0,
                placement=None,  # the scheduler records the live placement
                submitted_at=now,
                updated_at=now,
            )
            job_repo.add_job(s, row, row.reason)
            project_repo.audit(
                s, actor.name, "job.submit", str(row.id), project=project, name=spec.name
            )
            return _view(s, row), True
    except IntegrityError:
        if not request_id:
            raise
        # Two requests with one id raced; the first one won: return its job.
        with store.session() as s:
            existing = job_repo.job_by_request_id(s, actor.user_id, request_id)
            if existing is None:
                raise
            return _view(s, existing), False


def _check_workdir(factory: Factory, spec: JobSpec) -> str | None:
    if spec.workdir is None:
        return None
    if not spec.workdir.startswith(UPLOAD_PREFIX):
        raise Invalid(
            "workdir",
            spec.workdir,
            "send the directory first (POST /api/v1/uploads, as `grappe run` does) "
            "and set workdir to upload:<sha256>",
        )
    sha = spec.workdir.removeprefix(UPLOAD_PREFIX)
    with factory.store.session() as s:
        if job_repo.upload(s, sha) is None:
            raise Invalid("workdir", spec.workdir, "no such upload; upload the directory again")
    return sha


def _view(s: Any, row: JobRow, detail: bool = False) -> dict[str, Any]:
    return job_view(_to_job(s, row, detail), detail)


def _to_job(s: Any, row: JobRow, history: bool = False) -> Job:
    projects, users = project_repo.names_by_id(s, [row.project_id], [row.owner_id])
    events = job_repo.job_events(s, row.id) if history else None
    return job_repo.to_job(row, projects[row.project_id], users[row.owner_id], events)


def _visible_row(s: Any, actor: Principal, job_id: int) -> JobRow:
    row = job_repo.job_row(s, job_id)
    if row is not None:
        projects, _ = project_repo.names_by_id(s, [row.project_id], [])
        if actor.can_see(projects[row.project_id]):
            return row
    raise NotFound(f"job {job_id} does not exist or belongs to a project you are not in")


def get_job(factory: Factory, actor: Principal, job_id: int) -> dict[str, Any]:
    with factory.store.session() as s:
        return _view(s, _visible_row(s, actor, job_id), detail=True)


def list_jobs(
    factory: Factory,
    actor: Principal,
    states: list[str] | None = None,
    project: str | None = None,
    mine: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    for state in states or []:
        if state not in JobState.__members__:
            raise Invalid("state", state, f"use one of {', '.join(JobState.__members__)}")
    if not 1 <= limit <= 10_000:
        raise Invalid("limit", limit, "use 1 to 10000")
    with factory.store.session() as s:
        if project is not None:
            if not actor.can_see(project):
                raise NotFound(f"project {project!r} does not exist or you are not a member")
            prow = project_repo.project_by_name(s, project)
            ids: list[int] | None = [prow.id] if prow else []
        elif actor.staff:
            ids = None
        else:
            ids = [p.id for p in project_repo.list_projects(s, actor.projects)]
        rows = job_repo.list_jobs(s, ids, states or (), actor.user_id if mine else None, limit)
        projects, users = project_repo.names_by_id(
            s, {r.project_id for r in rows}, {r.owner_id for r in rows}
        )
        return [
            job_view(job_repo.to_job(r, projects[r.project_id], users[r.owner_id])) for r in rows
        ]


def cancel_job(factory: Factory, actor: Principal, job_id: int) -> dict[str, Any]:
    """Cancel a job: at once if it waits in Grappe's queue, through its site's engine if not."""
    now = utcnow()
    with factory.store.session() as s:
        row = _visible_row(s, actor, job_id)
        state = JobState(row.state)
        if state.terminal:
            raise Conflict(f"job {job_id} has already ended ({state}); nothing to cancel")
        reason = f"cancelled by {actor.name}"
        job_repo.set_job_fields(s, job_id, cancel_requested=True, cancel_reason=reason)
        if state == JobState.PENDING and job_repo.move_job(
            s, job_id, [JobState.PENDING], JobState.CANCELLED, reason, now, ended_at=now
        ):
            project_repo.audit(s, actor.name, "job.cancel", str(job_id))
            return _view(s, job_repo.job_row(s, job_id) or row)
        project_repo.audit(s, actor.name, "job.cancel", str(job_id))
        site, handle = row.site, row.handle
    if site and handle:
        try:
            factory.backends[site].cancel(handle)
        except SiteUnavailable as exc:
            raise ServiceError(
                f"site {site} is not answering ({exc}); the cancel is recorded and will be "
                "sent when it answers"
            ) from None
    # Record the final state (and charge usage) now rather than at the loop's next pass.
    reconcile_job(factory, job_id)
    with factory.store.session() as s:
        return _view(s, job_repo.job_row(s, job_id) or row)


def job_logs(
    factory: Factory, actor: Principal, job_id: int, offset: int = 0, limit: int = 1 << 20
) -> tuple[bytes, JobState, int]:
    """Output of the job's current attempt from ``offset``, the job's state, and that attempt."""
    if offset < 0:
        raise Invalid("offset", offset, "must be zero or more")
    with factory.store.session() as s:
        row = _visible_row(s, actor, job_id)
        site, handle, state, attempt = row.site, row.handle, JobState(row.state), row.attempt
    if not site or not handle:
        return b"", state, attempt
    try:
        return factory.backends[site].logs(handle, offset, limit), state, attempt
    except SiteUnavailable as exc:
        raise ServiceError(f"site {site} is not answering ({exc}); try again later") from None
