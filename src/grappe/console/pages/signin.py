"""Sign in with a token, sign out, and switch language.

The sign-in form is protected from login CSRF by a one-visit secret in a
SameSite=Strict cookie that the form must echo (a page elsewhere can read
neither). The token then lives in an HttpOnly cookie that scripts cannot read.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from grappe.api.limits import client_address
from grappe.console import i18n, nav
from grappe.console.web import (
    SESSION_COOKIE,
    ConsoleRoute,
    MemberDep,
    VisitorDep,
    check_origin,
    csrf_for,
    safe_next,
    see_other,
)
from grappe.services.auth import authenticate
from grappe.services.errors import Unauthorized

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
VISIT_COOKIE = "grappe_signin"
YEAR_S = 365 * 24 * 3600


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


@router.get("/signin")
def signin_page(ctx: VisitorDep, next: str = "/", error: str = "") -> Response:
    if ctx.me is not None:
        return see_other(safe_next(next))
    visit = ctx.request.cookies.get(VISIT_COOKIE) or secrets.token_urlsafe(24)
    response = ctx.render(
        "signin.html", next=safe_next(next), error=error, visit_csrf=csrf_for(visit)
    )
    _cookie(response, ctx.request, VISIT_COOKIE, visit, 3600)
    return response


@router.post("/signin")
async def signin(ctx: VisitorDep) -> Response:
    form = await ctx.request.form()
    back = safe_next(str(form.get("next", "/")))
    visit = ctx.request.cookies.get(VISIT_COOKIE, "")
    check_origin(ctx.request)
    if not visit or not hmac.compare_digest(str(form.get("csrf", "")), csrf_for(visit)):
        return see_other(f"/signin?error=expired&next={quote(back)}")
    token = str(form.get("token", "")).strip()
    failures = ctx.request.app.state.auth_failures
    try:
        failures.guard(client_address(ctx.request), lambda: authenticate(ctx.factory.store, token))
    except Unauthorized:
        return ctx.render(
            "signin.html", status=401, next=back, error="bad", visit_csrf=csrf_for(visit)
        )
    response = see_other(back)
    _cookie(response, ctx.request, SESSION_COOKIE, token, 30 * 24 * 3600)
    response.delete_cookie(VISIT_COOKIE, path="/")
    return response


@router.post("/signout")
async def signout(ctx: MemberDep) -> Response:
    ctx.check_form(await ctx.request.form())
    response = see_other("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{language}")
def switch_language(language: str, ctx: VisitorDep, next: str = "/") -> Response:
    """Remember the language in a cookie; only the display changes, so a link is enough."""
    response = see_other(safe_next(next))
    if language in i18n.LANGUAGES:
        _cookie(response, ctx.request, i18n.COOKIE, language, YEAR_S)
    return response


nav.register("signin", router)
