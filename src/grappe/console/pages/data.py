"""Datasets: the catalog by sector, a dataset's page, access requests and the operators' queue.

Every member browses the catalog. Open data downloads for everyone; restricted
and health data download only for a project an operator granted, so a
dataset's page says whether the member may read it and, if not, offers the
request form. Operators decide pending requests from ``/data/queue``, with a
reason the project reads. Everything goes through ``grappe.data`` as the API does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from grappe.api.data import file_response
from grappe.console import i18n, nav
from grappe.console.web import ConsoleRoute, Ctx, MemberDep, StaffDep, see_other
from grappe.data import access, catalog
from grappe.domain.datasets import Sensitivity
from grappe.services.errors import NotFound

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _sectors(ctx: Ctx) -> list[str]:
    return sorted({d["sector"] for d in catalog.list_datasets(ctx.factory, ctx.principal)})


@router.get("/data")
def data_catalog(ctx: MemberDep, sector: str = "", search: str = "") -> Response:
    found = catalog.list_datasets(ctx.factory, ctx.principal, sector or None, search or None)
    return ctx.render(
        "data.html",
        datasets=found,
        sectors=_sectors(ctx),
        filters={"sector": sector, "search": search},
    )


@router.get("/data/requests")
def my_requests(ctx: MemberDep, state: str = "") -> Response:
    """The requests of the member's projects (every request, for an operator)."""
    rows = access.list_requests(ctx.factory, ctx.principal, state or None)
    return ctx.render("data_requests.html", requests=rows, states=access.STATES, state=state)


@router.get("/data/queue")
def queue(ctx: StaffDep, done: str = "") -> Response:
    """Pending requests, oldest first, and the latest decisions."""
    pending = access.list_requests(ctx.factory, ctx.principal, access.PENDING)[::-1]
    decided = [
        r for r in access.list_requests(ctx.factory, ctx.principal) if r["state"] != "pending"
    ][:20]
    return ctx.render("data_queue.html", pending=pending, decided=decided, done=done)


@router.post("/data/queue/{request_id}/{decision}")
async def decide(request_id: int, decision: str, ctx: StaffDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    reason = str(form.get("reason", "")).strip()
    if decision == "grant":
        expires = str(form.get("expires", "")).strip() or None
        access.grant(ctx.factory, ctx.principal, request_id, expires, reason)
    elif decision == "refuse":
        access.refuse(ctx.factory, ctx.principal, request_id, reason)
    elif decision == "revoke":
        access.revoke(ctx.factory, ctx.principal, request_id, reason)
    else:
        raise NotFound(f"no such decision {decision!r}; grant, refuse or revoke")
    return see_other(f"/data/queue?done={request_id}#request-{request_id}")


@router.get("/data/{sector}/{name}")
def dataset_page(sector: str, name: str, ctx: MemberDep, asked: str = "") -> Response:
    view = catalog.get_dataset(ctx.factory, ctx.principal, f"{sector}/{name}")
    mine = [
        r
        for r in access.list_requests(ctx.factory, ctx.principal, None, view["id"])
        if ctx.principal.can_see(r["project"])
    ]
    readable = view["access"]["readable"]
    needs_grant = Sensitivity(view["sensitivity"]).needs_grant
    # Projects that may still ask: not granted already and no request awaiting an operator.
    busy = {r["project"] for r in mine if r["state"] in ("pending", "granted")}
    askable = [p for p in sorted(ctx.principal.projects) if p not in busy]
    return ctx.render(
        "dataset.html",
        d=view,
        requests=mine,
        readable=readable,
        needs_grant=needs_grant,
        askable=askable if needs_grant and not ctx.principal.staff else [],
        via=(view["access"].get("projects") or [None])[0],
        asked=asked,
    )


@router.post("/data/{sector}/{name}/request")
async def request_access(sector: str, name: str, ctx: MemberDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    made = access.request_access(
        ctx.factory,
        ctx.principal,
        f"{sector}/{name}",
        str(form.get("project", "")),
        str(form.get("purpose", "")),
    )
    return see_other(f"/data/{sector}/{name}?asked={made['id']}")


@router.get("/data/{sector}/{name}/files/{filename:path}")
def download(
    sector: str,
    name: str,
    filename: str,
    ctx: MemberDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    project: str | None = None,
) -> Response:
    """A file, once access is checked (and audited) as the API's download does."""
    info, chunks = catalog.open_file(
        ctx.factory, ctx.principal, f"{sector}/{name}", filename, version, project or None
    )
    return file_response(info, chunks)


nav.register("data", router, nav.Page("data", "/data", order=50))

i18n.add_messages(
    "en",
    {
        "nav.data": "Data",
        "data.title": "Datasets",
        "data.intro": "Curated sector datasets. Open data downloads for every member; "
        "restricted and health data need an operator's grant to one of your projects.",
        "data.all_sectors": "All sectors",
        "data.search": "Search",
        "data.filter": "Filter",
        "data.none": "No dataset matches.",
        "data.id": "Dataset",
        "data.sector": "Sector",
        "data.publisher": "Publisher",
        "data.licence": "Licence",
        "data.source": "Source",
        "data.sensitivity": "Sensitivity",
        "data.residency": "Residency",
        "data.allowed_sites": "Sites allowed to run on it",
        "data.anywhere": "any site",
        "data.latest": "Latest version",
        "data.size": "Size",
        "data.versions": "Versions",
        "data.version": "Version",
        "data.note": "Note",
        "data.files": "Files",
        "data.no_files": "No files yet.",
        "data.created": "Added",
        "data.access": "Your access",
        "data.readable": "You may read this dataset",
        "data.not_readable": "You may not read this dataset yet",
        "data.download": "download",
        "data.request": "Request access",
        "data.request_help": "An operator reads your purpose and grants or refuses access "
        "for the project you name.",
        "data.project": "Project",
        "data.purpose": "Purpose",
        "data.purpose_hint": "What the data is for, in a sentence or two",
        "data.send": "Send the request",
        "data.asked": "Request {id} sent; an operator will decide.",
        "data.my_requests": "My access requests",
        "data.requests": "Access requests",
        "data.no_requests": "No requests.",
        "data.all_states": "All states",
        "data.requester": "Asked by",
        "data.state": "State",
        "data.decided": "Decided",
        "data.expires": "Expires",
        "data.reason": "Reason",
        "data.queue": "Data access queue",
        "data.queue_empty": "No request awaits a decision.",
        "data.recent": "Latest decisions",
        "data.grant": "Grant",
        "data.refuse": "Refuse",
        "data.revoke": "Revoke",
        "data.expires_hint": "30d or 2027-06-30 (optional)",
        "data.reason_hint": "Reason (shown to the project; needed to refuse)",
        "data.done": "Request {id} decided.",
        "data.asked_at": "Asked",
        "data.state.pending": "pending",
        "data.state.granted": "granted",
        "data.state.refused": "refused",
        "data.state.revoked": "revoked",
        "data.state.expired": "expired",
        "data.sens.open": "open",
        "data.sens.restricted": "restricted",
        "data.sens.health": "health",
    },
)
i18n.add_messages(
    "fr",
    {
        "nav.data": "Données",
        "data.title": "Jeux de données",
        "data.intro": "Des jeux de données sectoriels choisis. Les données ouvertes se "
        "téléchargent librement ; les données restreintes et de santé demandent l'accord "
        "d'un opérateur pour l'un de vos projets.",
        "data.all_sectors": "Tous les secteurs",
        "data.search": "Rechercher",
        "data.filter": "Filtrer",
        "data.none": "Aucun jeu de données ne correspond.",
        "data.id": "Jeu de données",
        "data.sector": "Secteur",
        "data.publisher": "Éditeur",
        "data.licence": "Licence",
        "data.source": "Source",
        "data.sensitivity": "Sensibilité",
        "data.residency": "Résidence",
        "data.allowed_sites": "Sites autorisés à l'utiliser",
        "data.anywhere": "tout site",
        "data.latest": "Dernière version",
        "data.size": "Taille",
        "data.versions": "Versions",
        "data.version": "Version",
        "data.note": "Note",
        "data.files": "Fichiers",
        "data.no_files": "Pas encore de fichiers.",
        "data.created": "Ajoutée",
        "data.access": "Votre accès",
        "data.readable": "Vous pouvez lire ce jeu de données",
        "data.not_readable": "Vous ne pouvez pas encore lire ce jeu de données",
        "data.download": "télécharger",
        "data.request": "Demander l'accès",
        "data.request_help": "Un opérateur lit votre objectif et accorde ou refuse l'accès "
        "au projet que vous nommez.",
        "data.project": "Projet",
        "data.purpose": "Objectif",
        "data.purpose_hint": "À quoi serviront les données, en une ou deux phrases",
        "data.send": "Envoyer la demande",
        "data.asked": "Demande {id} envoyée ; un opérateur va décider.",
        "data.my_requests": "Mes demandes d'accès",
        "data.requests": "Demandes d'accès",
        "data.no_requests": "Aucune demande.",
        "data.all_states": "Tous les états",
        "data.requester": "Demandée par",
        "data.state": "État",
        "data.decided": "Décidée",
        "data.expires": "Expire",
        "data.reason": "Motif",
        "data.queue": "File des demandes d'accès",
        "data.queue_empty": "Aucune demande n'attend de décision.",
        "data.recent": "Dernières décisions",
        "data.grant": "Accorder",
        "data.refuse": "Refuser",
        "data.revoke": "Révoquer",
        "data.expires_hint": "30d ou 2027-06-30 (facultatif)",
        "data.reason_hint": "Motif (lu par le projet ; requis pour refuser)",
        "data.done": "Demande {id} traitée.",
        "data.asked_at": "Demandée",
        "data.state.pending": "en attente",
        "data.state.granted": "accordée",
        "data.state.refused": "refusée",
        "data.state.revoked": "révoquée",
        "data.state.expired": "expirée",
        "data.sens.open": "ouvertes",
        "data.sens.restricted": "restreintes",
        "data.sens.health": "santé",
    },
)
