"""The overview: the federation's sites, the queue, my jobs and my projects' allocations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from grappe.api.sites import list_sites
from grappe.console import nav
from grappe.console.charts import Bar, bars
from grappe.console.web import ConsoleRoute, Ctx, MemberDep
from grappe.services import jobs, projects

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
WAITING = ["PENDING", "SUBMITTED"]
MY_JOBS = 10


def federation(ctx: Ctx) -> list[dict[str, Any]]:
    """Every site as the API shows it, with what is in use (total less free) added up."""
    sites = list_sites(ctx.factory, ctx.principal)
    for site in sites:
        pools = site["pools"]
        site["gpus_total"] = sum(p["total_gpus"] for p in pools)
        site["cpus_total"] = sum(p["total_cpus"] for p in pools)
        site["gpus_free"] = sum(p["free_gpus"] or 0 for p in pools)
        site["cpus_free"] = sum(p["free_cpus"] or 0 for p in pools)
        site["gpus_used"] = max(site["gpus_total"] - site["gpus_free"], 0)
        site["cpus_used"] = max(site["cpus_total"] - site["cpus_free"], 0)
        site["gpu_models"] = sorted({p["gpu_model"] for p in pools if p["gpu_model"]})
    return sites


def allocation_charts(ctx: Ctx, views: list[dict[str, Any]]) -> dict[str, Any]:
    """GPU-hour and CPU-hour bars, used against allocated, one per project."""
    t = ctx.t

    def rows(kind: str) -> list[Bar]:
        return [
            Bar(p["name"], p["used"][kind], p["allocation"][kind] if p["allocation"] else None)
            for p in views
            if p["allocation"] is None or p["allocation"][kind] or p["used"][kind]
        ]

    return {
        "gpu": bars(t("chart.gpu_hours"), rows("gpu_hours"), "h", t("chart.no_allocation")),
        "cpu": bars(t("chart.cpu_hours"), rows("cpu_hours"), "h", t("chart.no_allocation")),
    }


def queue(ctx: Ctx) -> list[dict[str, Any]]:
    return list(reversed(jobs.list_jobs(ctx.factory, ctx.principal, WAITING, limit=50)))


@router.get("/")
def overview(ctx: MemberDep) -> Response:
    me = ctx.principal
    mine = [p for p in projects.list_projects(ctx.factory.store, me) if p["name"] in me.projects]
    return ctx.render(
        "overview.html",
        sites=federation(ctx),
        queue=queue(ctx),
        my_jobs=jobs.list_jobs(ctx.factory, me, mine=True, limit=MY_JOBS),
        my_limit=MY_JOBS,
        projects=mine,
        charts=allocation_charts(ctx, mine),
    )


@router.get("/overview/sites")
def site_cards(ctx: MemberDep) -> Response:
    """The sites' cards alone, for the page to refresh itself."""
    return ctx.render("_sites.html", sites=federation(ctx))


@router.get("/overview/queue")
def queue_rows(ctx: MemberDep) -> Response:
    """The queue's rows alone, for the page to refresh itself."""
    return ctx.render("_queue_rows.html", queue=queue(ctx))


nav.register("overview", router, nav.Page("overview", "/", order=10))
