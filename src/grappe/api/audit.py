"""The audit log over HTTP (operators)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.services import audit

router = APIRouter(tags=["projects"])


@router.get("/audit")
def audit_log(
    factory: FactoryDep,
    me: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_ENTRIES)] = 100,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    """Who did what, newest first; ``action`` keeps the entries that start with it."""
    return audit.audit_log(factory.store, me, limit, action)
