"""Request dependencies: the factory and the authenticated member."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grappe.api.limits import client_address
from grappe.runtime import Factory
from grappe.services.auth import Principal, authenticate

_bearer = HTTPBearer(auto_error=False, description="a Grappe token (grp_…)")


def get_factory(request: Request) -> Factory:
    return request.app.state.factory  # type: ignore[no-any-return]


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials else None
    if token is None:  # nothing guessed: a plain 401, not counted
        return authenticate(get_factory(request).store, token)
    failures = request.app.state.auth_failures
    return failures.guard(  # type: ignore[no-any-return]
        client_address(request), lambda: authenticate(get_factory(request).store, token)
    )


FactoryDep = Annotated[Factory, Depends(get_factory)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
