"""Project API keys for the gateway: shown once, stored as SHA-256 hashes, revocable."""

from __future__ import annotations

import secrets
from typing import Any

from grappe.gateway.service import KEY_PREFIX, hash_key
from grappe.services.auth import Principal
from grappe.services.errors import Invalid, NotFound
from grappe.spec.jobspec import NAME_RE
from grappe.store import gateway as store_gw
from grappe.store import project_repo
from grappe.store.db import Store
from grappe.store.tables import utcnow


def _view(row: Any, project: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "project": project,
        "prefix": row.prefix,
        "rpm": row.rpm,
        "tpm": row.tpm,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def create_key(
    store: Store,
    actor: Principal,
    project: str,
    name: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
) -> dict[str, Any]:
    """A new key charging ``project``; the key itself is in the answer, and only there."""
    if not actor.can_see(project):
        raise NotFound(f"project {project!r} does not exist or you are not a member")
    name = name or f"{project}-key"
    if not NAME_RE.match(name):
        raise Invalid("name", name, "use letters, digits, '.', '_' and '-'")
    for field, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and value < 1:
            raise Invalid(field, value, "give a positive limit, or none for no limit")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as s:
        p = project_repo.project_by_name(s, project)
        if p is None:
            raise NotFound(f"project {project!r} does not exist; see `grappe projects`")
        row = store_gw.add_key(
            s,
            project_id=p.id,
            name=name,
            key_hash=hash_key(key),
            prefix=key[: len(KEY_PREFIX) + 4],
            rpm=rpm,
            tpm=tpm,
            created_by=actor.name,
        )
        project_repo.audit(s, actor.name, "key.create", project, key=name, rpm=rpm, tpm=tpm)
        return {**_view(row, project), "key": key}


def list_keys(store: Store, actor: Principal) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = store_gw.list_keys(s, None if actor.staff else actor.projects)
        return [_view(k, p) for k, p in rows]


def revoke_key(store: Store, actor: Principal, key_id: int) -> dict[str, Any]:
    with store.session() as s:
        found = store_gw.key_by_id(s, key_id)
        if found is None or not actor.can_see(found[1]):
            raise NotFound(
                f"key {key_id} does not exist or is not in your projects; see `grappe keys ls`"
            )
        row, project = found
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            project_repo.audit(s, actor.name, "key.revoke", project, key=row.name)
        return _view(row, project)
