"""Project API keys for the OpenAI-compatible gateway: create (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.gateway import keys

router = APIRouter(prefix="/keys", tags=["models"])


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    name: str | None = None
    rpm: int | None = None
    tpm: int | None = None


@router.post("", status_code=201)
def create(body: KeyBody, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """A new key for a project you belong to; the key is in this answer only."""
    return keys.create_key(factory.store, me, body.project, body.name, body.rpm, body.tpm)


@router.get("")
def list_keys(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """Keys of your projects (all of them for operators), without the secrets."""
    return keys.list_keys(factory.store, me)


@router.delete("/{key_id}")
def revoke(key_id: int, request: Request, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Revoke a key; requests with it are refused from now on."""
    view = keys.revoke_key(factory.store, me, key_id)
    request.app.state.gateway.forget_keys()
    return view
