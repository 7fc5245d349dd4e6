"""Models: the open-weight catalog as cards, a chat playground, and my projects' API keys.

The playground talks to the factory's OpenAI-compatible ``/v1`` exactly as a
user's own code would: with a project API key, streaming the answer as
server-sent events. The console never keeps a key's secret (the store holds
only its hash): a key is shown once, when it is made, and the playground
takes it from there or from the member's paste.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from grappe.console import i18n, nav
from grappe.console.web import ConsoleRoute, Ctx, MemberDep, see_other
from grappe.gateway import deployments, keys
from grappe.services.errors import Invalid

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _cards(ctx: Ctx) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The catalog's cards, each marked served or not, and what is served beyond them."""
    served = {d["model"]: d for d in deployments.list_deployments(ctx.request.app.state.gateway)}
    cards = [{**card, "served": card["id"] in served} for card in deployments.catalog()]
    cards.sort(key=lambda c: not c["served"])  # what one can call now comes first
    known = {c["id"] for c in cards}
    extra = [d for m, d in served.items() if m not in known]
    return cards, extra


def _page(ctx: Ctx, created: dict[str, Any] | None = None, status: int = 200) -> Response:
    cards, extra = _cards(ctx)
    served = [c for c in cards if c["served"]] + extra
    chat_models = [
        c.get("id") or c.get("model") for c in served if c.get("task") in ("chat", "completion")
    ]
    return ctx.render(
        "models.html",
        status=status,
        cards=cards,
        extra=extra,
        chat_models=chat_models,
        keys=keys.list_keys(ctx.factory.store, ctx.principal),
        projects=sorted(ctx.principal.projects),
        created=created,
        base_url=str(ctx.request.base_url),
    )


@router.get("/models")
def models_page(ctx: MemberDep) -> Response:
    return _page(ctx)


def _limit(form: Any, key: str) -> int | None:
    raw = str(form.get(key, "")).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(key, raw, "write a whole number per minute, or leave it empty") from None


@router.post("/models/keys")
async def create_key(ctx: MemberDep) -> Response:
    """Make a key; the page that answers is the only place its secret is ever shown."""
    form = await ctx.request.form()
    ctx.check_form(form)
    made = keys.create_key(
        ctx.factory.store,
        ctx.principal,
        str(form.get("project", "")),
        str(form.get("name", "")).strip() or None,
        _limit(form, "rpm"),
        _limit(form, "tpm"),
    )
    response = _page(ctx, created=made, status=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/models/keys/{key_id}/revoke")
async def revoke_key(key_id: int, ctx: MemberDep) -> Response:
    ctx.check_form(await ctx.request.form())
    keys.revoke_key(ctx.factory.store, ctx.principal, key_id)
    ctx.request.app.state.gateway.forget_keys()
    return see_other(f"/models#key-{key_id}")


nav.register("models", router, nav.Page("models", "/models", order=40))

i18n.add_messages(
    "en",
    {
        "nav.models": "Models",
        "models.title": "Models",
        "models.intro": "Open-weight models, called with any OpenAI client at /v1 with a "
        "project API key; tokens are charged to the key's project.",
        "models.playground": "Chat playground",
        "models.playground_help": "Streams the answer through /v1, as your code would. "
        "Paste a key of your project (or make one below).",
        "models.model": "Model",
        "models.key": "API key",
        "models.message": "Message",
        "models.send": "Send",
        "models.clear": "New conversation",
        "models.no_chat": "No chat model is served yet; an operator deploys one with "
        "`grappe models deploy`.",
        "models.catalog": "Catalog",
        "models.served": "served here",
        "models.not_served": "not served yet",
        "models.publisher": "Publisher",
        "models.licence": "Licence",
        "models.parameters": "Parameters",
        "models.context": "Context",
        "models.languages": "Languages",
        "models.jurisdiction": "Publisher's country",
        "models.task": "Task",
        "models.also_served": "Also served",
        "models.engine": "Engine",
        "models.keys": "API keys",
        "models.keys_help": "Keys charge their project. The secret is shown once, when "
        "the key is made.",
        "models.key_name": "Name",
        "models.prefix": "Begins with",
        "models.limits": "Limits",
        "models.created": "Made",
        "models.revoked": "revoked",
        "models.revoke": "Revoke",
        "models.no_keys": "No key yet.",
        "models.new_key": "Make a key",
        "models.make": "Make the key",
        "models.rpm": "requests/min",
        "models.tpm": "tokens/min",
        "models.created_key": "Key {name} for project {project}. Copy it now: it will "
        "not be shown again.",
        "models.use_key": "The playground uses it already.",
        "models.example": "With the OpenAI client",
    },
)
i18n.add_messages(
    "fr",
    {
        "nav.models": "Modèles",
        "models.title": "Modèles",
        "models.intro": "Des modèles à poids ouverts, appelés avec n'importe quel client "
        "OpenAI sur /v1 avec une clé d'API de projet ; les jetons sont facturés au projet "
        "de la clé.",
        "models.playground": "Bac à sable de discussion",
        "models.playground_help": "La réponse arrive en flux par /v1, comme pour votre code. "
        "Collez une clé de votre projet (ou créez-en une plus bas).",
        "models.model": "Modèle",
        "models.key": "Clé d'API",
        "models.message": "Message",
        "models.send": "Envoyer",
        "models.clear": "Nouvelle conversation",
        "models.no_chat": "Aucun modèle de discussion n'est encore servi ; un opérateur en "
        "déploie un avec `grappe models deploy`.",
        "models.catalog": "Catalogue",
        "models.served": "servi ici",
        "models.not_served": "pas encore servi",
        "models.publisher": "Éditeur",
        "models.licence": "Licence",
        "models.parameters": "Paramètres",
        "models.context": "Contexte",
        "models.languages": "Langues",
        "models.jurisdiction": "Pays de l'éditeur",
        "models.task": "Tâche",
        "models.also_served": "Aussi servis",
        "models.engine": "Moteur",
        "models.keys": "Clés d'API",
        "models.keys_help": "Les clés sont facturées à leur projet. Le secret n'est montré "
        "qu'une fois, à la création.",
        "models.key_name": "Nom",
        "models.prefix": "Commence par",
        "models.limits": "Limites",
        "models.created": "Créée",
        "models.revoked": "révoquée",
        "models.revoke": "Révoquer",
        "models.no_keys": "Aucune clé pour l'instant.",
        "models.new_key": "Créer une clé",
        "models.make": "Créer la clé",
        "models.rpm": "requêtes/min",
        "models.tpm": "jetons/min",
        "models.created_key": "Clé {name} pour le projet {project}. Copiez-la maintenant : "
        "elle ne sera plus montrée.",
        "models.use_key": "Le bac à sable l'utilise déjà.",
        "models.example": "Avec le client OpenAI",
    },
)
