"""What every console page shares: the signed-in member, language, CSRF checks and rendering.

The member is found from the ``grappe_session`` cookie, which holds their API
token (HttpOnly, SameSite=Strict), through the same ``authenticate`` the API
uses, and every page calls the same services as the API: a member sees in the
console exactly what they may see through the API. Forms carry a per-session
token derived from the session (an HMAC of it) and are refused without it or
from another origin.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from grappe import __version__
from grappe.api.limits import TooManyFailures, client_address
from grappe.console import i18n, nav
from grappe.domain.resources import format_duration
from grappe.runtime import Factory
from grappe.services.auth import Principal, authenticate
from grappe.services.errors import Forbidden, ServiceError, Unauthorized

SESSION_COOKIE = "grappe_session"
# Only this console's own files run or style its pages, and no other site may frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

TEMPLATES = Environment(
    loader=PackageLoader("grappe.console", "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["when"] = lambda iso: (iso or "")[:19].replace("T", " ")
TEMPLATES.filters["duration"] = format_duration


class SignInRequired(Exception):
    """The page needs a signed-in member; the browser is sent to the sign-in page."""


def csrf_for(secret: str) -> str:
    """The form token of a session (or of a sign-in visit): an HMAC of its secret."""
    return hmac.new(secret.encode(), b"grappe-console-form", sha256).hexdigest()


def safe_next(path: str | None) -> str:
    """A local path to go back to after a redirect; anything else becomes ``/``."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@dataclass
class Ctx:
    """One request as a page sees it: who asks, in which language, and how to answer."""

    request: Request
    factory: Factory
    me: Principal | None
    lang: str
    token: str | None = field(repr=False, default=None)

    @property
    def t(self) -> Callable[..., str]:
        return i18n.translator(self.lang)

    @property
    def principal(self) -> Principal:
        if self.me is None:
            raise SignInRequired()
        return self.me

    @property
    def csrf(self) -> str:
        return csrf_for(self.token) if self.token else ""

    def check_form(self, form: Any) -> None:
        """Refuse a form sent from another origin or without this session's form token."""
        check_origin(self.request)
        sent = str(form.get("csrf", ""))
        if not self.token or not hmac.compare_digest(sent, self.csrf):
            raise Forbidden("this form is not from this console session; reload the page")

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        staff = bool(self.me and self.me.staff)
        html = TEMPLATES.get_template(template).render(
            t=self.t,
            lang=self.lang,
            me=self.me,
            nav=nav.pages(staff) if self.me else [],
            csrf=self.csrf,
            path=self.request.url.path,
            here=quote(full_path(self.request)),
            version=__version__,
            **values,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def full_path(request: Request) -> str:
    """The path and query of the request, to come back to it."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def check_origin(request: Request) -> None:
    """A state-changing request must come from a page of this console (or say nothing)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a form from {origin} may not act on this console")


def _ctx(request: Request) -> Ctx:
    factory: Factory = request.app.state.factory
    lang = i18n.pick_language(
        request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
    )
    token = request.cookies.get(SESSION_COOKIE)
    me = None
    if token:
        try:  # a session cookie is a token: guessing it counts as failed sign-ins do
            me = request.app.state.auth_failures.guard(
                client_address(request), lambda: authenticate(factory.store, token)
            )
        except (Unauthorized, TooManyFailures):  # blocked: signed out, whatever the cookie
            token = None
    return Ctx(request, factory, me, lang, token)


def visitor(request: Request) -> Ctx:
    """Anyone, signed in or not (the sign-in page)."""
    return _ctx(request)


def member(request: Request) -> Ctx:
    """A signed-in member; others are sent to sign in."""
    ctx = _ctx(request)
    ctx.principal  # noqa: B018 -- raises SignInRequired
    return ctx


def staff(request: Request) -> Ctx:
    """An operator or admin; a member is answered 403."""
    ctx = member(request)
    ctx.principal.require_staff("the operator pages")
    return ctx


VisitorDep = Annotated[Ctx, Depends(visitor)]
MemberDep = Annotated[Ctx, Depends(member)]
StaffDep = Annotated[Ctx, Depends(staff)]


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    ctx = _ctx(request)
    return ctx.render("error.html", status=status, status_code=status, message=message)


class ConsoleRoute(APIRoute):
    """A console route: a service's refusal is an HTML page, not JSON; no session, sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                back = safe_next(full_path(request))
                return RedirectResponse(f"/signin?next={quote(back)}", status_code=303)
            except ServiceError as exc:
                return error_page(request, exc.status, exc.message)

        return console_handler


def see_other(path: str) -> RedirectResponse:
    """The answer to a form that worked: go and look (303, so a reload does not re-send)."""
    return RedirectResponse(path, status_code=303)
