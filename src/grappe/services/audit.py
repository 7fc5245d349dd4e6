"""The audit log: who did what to which thing, newest first (operators only)."""

from __future__ import annotations

from typing import Any

from grappe.services.auth import Principal
from grappe.services.errors import Invalid
from grappe.store import project_repo
from grappe.store.db import Store

MAX_ENTRIES = 10_000


def audit_log(
    store: Store, actor: Principal, limit: int = 100, action: str | None = None
) -> list[dict[str, Any]]:
    """The latest ``limit`` entries, of one ``action`` (``job.submit``, ``user.``…) if given."""
    actor.require_staff("reading the audit log")
    if not 1 <= limit <= MAX_ENTRIES:
        raise Invalid("limit", limit, f"use 1 to {MAX_ENTRIES}")
    with store.session() as s:
        rows = project_repo.audit_log(s, limit, action)
        return [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "detail": r.detail,
            }
            for r in rows
        ]
