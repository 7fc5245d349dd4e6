"""Jobs: the list with filters (refreshed live), and submitting from YAML or a simple form."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from grappe.console import nav, specs
from grappe.console.web import ConsoleRoute, Ctx, MemberDep, see_other
from grappe.domain.jobs import JobState
from grappe.services import jobs
from grappe.services.errors import ServiceError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

EXAMPLE = """\
name: hello
project: {project}
resources:
  cpus: 1
  memory: 256M
run: |
  echo "Hello from Grappe job $GRAPPE_JOB_ID on site $GRAPPE_SITE"
max_runtime: 2m
"""


def _filters(state: str, project: str, mine: bool) -> dict[str, Any]:
    return {"state": state, "project": project, "mine": mine}


def _list(ctx: Ctx, state: str, project: str, mine: bool, limit: int = 200) -> list[dict[str, Any]]:
    return jobs.list_jobs(
        ctx.factory, ctx.principal, [state] if state else None, project or None, mine, limit
    )


def _editor(ctx: Ctx, checked: specs.Checked | None = None, status: int = 200) -> Response:
    me = ctx.principal
    first = sorted(me.projects)[0] if me.projects else "demo"
    return ctx.render(
        "job_new.html",
        status=status,
        checked=checked or specs.Checked(EXAMPLE.format(project=first)),
        projects=sorted(me.projects),
        request_id=uuid.uuid4().hex,
    )


@router.get("/jobs")
def job_list(
    ctx: MemberDep,
    state: str = "",
    project: str = "",
    mine: Annotated[bool, Query()] = False,
) -> Response:
    return ctx.render(
        "jobs.html",
        jobs=_list(ctx, state, project, mine),
        filters=_filters(state, project, mine),
        states=list(JobState.__members__),
        projects=sorted(ctx.principal.projects),
    )


@router.get("/jobs/rows")
def job_rows(
    ctx: MemberDep,
    state: str = "",
    project: str = "",
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
) -> Response:
    """The list's rows alone, for a page to refresh itself."""
    return ctx.render("_job_rows.html", jobs=_list(ctx, state, project, mine, limit))


@router.get("/jobs/new")
def new_job(ctx: MemberDep) -> Response:
    return _editor(ctx)


@router.post("/jobs/check")
async def check_job(ctx: MemberDep) -> JSONResponse:
    """The editor's live check: the problems of the text typed so far, each with its line."""
    form = await ctx.request.form()
    ctx.check_form(form)
    checked = specs.check(str(form.get("spec", "")))
    return JSONResponse({"ok": checked.ok, "problems": checked.problems})


@router.post("/jobs/new")
async def submit_job(ctx: MemberDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    text = specs.from_form(form) if form.get("mode") == "form" else str(form.get("spec", ""))
    checked = specs.check(text.replace("\r\n", "\n"))
    if checked.spec is None:
        return _editor(ctx, checked, status=422)
    request_id = str(form.get("request_id", "")) or None
    try:
        job, created = jobs.submit_job(ctx.factory, ctx.principal, checked.spec, request_id)
    except ServiceError as exc:
        # Refused by the factory (not a member, no site could run it): shown in the editor too.
        found = exc.detail.get("problems") or [{"field": "", "value": None, "message": exc.message}]
        checked.problems = [
            {**p, "line": specs.line_of(checked.text, p["field"] or "")} for p in found
        ]
        checked.spec = None
        return _editor(ctx, checked, status=exc.status)
    scheduler = ctx.request.app.state.scheduler
    if created and scheduler is not None:
        scheduler.wake()
    return see_other(f"/jobs/{job['id']}")


nav.register("jobs", router, nav.Page("jobs", "/jobs", order=20))
