"""Plan: paste a job, see where it would run and why; nothing is submitted.

Against this factory's live sites (the same ``plan`` service as ``grappe plan``)
or against a reference federation file, every site as if empty (as
``grappe plan --federation`` does): "where in Europe would this run?".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from grappe.console import nav, specs
from grappe.console.web import ConsoleRoute, Ctx, MemberDep
from grappe.placement import place
from grappe.placement.declared import declared_snapshots
from grappe.services import jobs
from grappe.services.errors import Invalid
from grappe.spec.errors import SpecError
from grappe.spec.factory import load_factory

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
LIVE = "live"
# A source checkout keeps its reference federations here (src/grappe/console/pages -> repo).
CHECKOUT_FEDERATIONS = Path(__file__).resolve().parents[4] / "examples" / "federations"

EXAMPLE = """\
name: finetune
resources:
  gpus: H100:8
  cpus: 32
  memory: 256G
constraints:
  jurisdiction: EU
  certifications: [HDS]
run: python train.py
max_runtime: 12h
objective: carbon
"""


def federations(ctx: Ctx) -> dict[str, Path]:
    """Reference federation files by name (the file's stem), from the setting or the checkout."""
    folder = ctx.factory.settings.console_federations or CHECKOUT_FEDERATIONS
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _placement(ctx: Ctx, spec: Any, against: str) -> dict[str, Any]:
    if against == LIVE:
        return jobs.plan(ctx.factory, ctx.principal, spec)
    path = federations(ctx).get(against)
    if path is None:
        raise Invalid("against", against, f"use {LIVE} or one of {sorted(federations(ctx))}")
    try:
        sites = load_factory(path).to_domain()
    except SpecError as exc:
        raise Invalid("against", against, f"the federation file is not valid: {exc}") from None
    request = spec.to_request("plan", spec.project or "")
    return place(request, declared_snapshots(sites), ctx.factory.gpus).as_dict()


def _page(ctx: Ctx, text: str, against: str, **values: Any) -> Response:
    return ctx.render(
        "plan.html",
        text=text,
        against=against,
        live=LIVE,
        federations=list(federations(ctx)),
        **values,
    )


@router.get("/plan")
def plan_page(ctx: MemberDep) -> Response:
    first = next(iter(federations(ctx)), LIVE)
    return _page(ctx, EXAMPLE, first)


@router.post("/plan")
async def plan(ctx: MemberDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    text = str(form.get("spec", "")).replace("\r\n", "\n")
    against = str(form.get("against", LIVE))
    checked = specs.check(text)
    if checked.spec is None:
        return _page(ctx, text, against, problems=checked.problems)
    return _page(ctx, text, against, result=_placement(ctx, checked.spec, against))


nav.register("plan", router, nav.Page("plan", "/plan", order=30))
