"""Operator pages (operators and admins): sites and pools, projects and allocations, usage.

A member who opens them is answered 403 by the same ``require_staff`` check the
API makes. Usage is shown as tables and charts and can be downloaded as CSV.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from grappe.console import nav
from grappe.console.charts import Bar, bars
from grappe.console.pages.overview import allocation_charts, federation
from grappe.console.web import ConsoleRoute, StaffDep, see_other
from grappe.services import projects
from grappe.services.errors import Invalid

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
USAGE_COLUMNS = ("project", "site", "gpu_hours", "cpu_hours", "eur", "kg_co2", "jobs")


@router.get("/operator")
def operator_page(ctx: StaffDep, allocated: str = "", shots: str = "") -> Response:
    views = projects.list_projects(ctx.factory.store, ctx.principal)
    return ctx.render(
        "operator.html",
        sites=federation(ctx),
        projects=views,
        charts=allocation_charts(ctx, views),
        allocated=allocated,
        shots=shots,
    )


def _number(form: Any, key: str, kind: type) -> Any:
    raw = str(form.get(key, "")).strip()
    try:
        return kind(raw)
    except ValueError:
        raise Invalid(key, raw, f"write a number, e.g. {kind(10)}") from None


@router.post("/operator/projects/{name}/allocate")
async def allocate(name: str, ctx: StaffDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    view = projects.allocate(
        ctx.factory.store,
        ctx.principal,
        name,
        _number(form, "gpu_hours", float),
        _number(form, "cpu_hours", float),
        _number(form, "days", int),
    )
    return see_other(f"/operator?allocated={view['name']}#project-{view['name']}")


@router.get("/operator/usage")
def usage_page(ctx: StaffDep) -> Response:
    report = projects.usage_report(ctx.factory.store, ctx.principal)
    rows = report["by_site"]
    t = ctx.t

    def total(key: str, by: str) -> list[Bar]:
        sums: dict[str, float] = {}
        for r in rows:
            sums[r[by]] = sums.get(r[by], 0.0) + r[key]
        return [Bar(name, value) for name, value in sorted(sums.items())]

    charts = [
        bars(f"{t('usage.gpu_hours')} · {t('job.project')}", total("gpu_hours", "project"), "h"),
        bars(f"{t('usage.cpu_hours')} · {t('job.project')}", total("cpu_hours", "project"), "h"),
        bars(f"{t('usage.gpu_hours')} · {t('job.site')}", total("gpu_hours", "site"), "h"),
        bars(f"{t('usage.cpu_hours')} · {t('job.site')}", total("cpu_hours", "site"), "h"),
        bars(f"{t('usage.kg_co2')} · {t('job.site')}", total("kg_co2", "site"), "kg"),
    ]
    return ctx.render("usage.html", rows=rows, charts=charts if rows else [])


@router.get("/operator/usage.csv")
def usage_csv(ctx: StaffDep) -> Response:
    report = projects.usage_report(ctx.factory.store, ctx.principal)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=USAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["by_site"]:
        writer.writerow({k: row[k] for k in USAGE_COLUMNS})
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="grappe-usage.csv"'},
    )


nav.register("operator", router, nav.Page("operator", "/operator", order=90, staff_only=True))
