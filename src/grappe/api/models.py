"""Models as a service, the operator's side: the catalog, deployments, replicas, project terms."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.gateway import deployments

router = APIRouter(prefix="/models", tags=["models"])


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    path: str | None = None
    url: str | None = None
    upstream_model: str | None = None
    jurisdiction: str | None = None
    task: str = "chat"


class ServeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    site: str
    replicas: int = 1
    path: str | None = None
    engine: str = "grappe"
    project: str | None = None
    cpus: int = 1
    task: str = "chat"


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: int | None = None
    jurisdiction: str | None = None


@router.get("")
def catalog(me: PrincipalDep) -> list[dict[str, Any]]:
    """Model cards: publisher, licence, parameters, context, languages, jurisdiction, source."""
    return deployments.catalog()


@router.get("/deployments")
def list_deployments(request: Request, me: PrincipalDep) -> list[dict[str, Any]]:
    """What the gateway serves now: each model, its engine, its replicas and their health."""
    return deployments.list_deployments(request.app.state.gateway)


@router.post("/deployments", status_code=201)
def deploy(body: DeployBody, request: Request, me: PrincipalDep) -> dict[str, Any]:
    """Serve a model in-process (``path``) or add an upstream replica (``url``; operators)."""
    return deployments.deploy(
        request.app.state.gateway,
        me,
        body.model,
        body.path,
        body.url,
        body.upstream_model,
        body.jurisdiction,
        body.task,
    )


@router.delete("/replicas/{replica_id}")
def remove_replica(replica_id: int, request: Request, me: PrincipalDep) -> dict[str, Any]:
    """Take a replica out of its deployment (operators)."""
    return deployments.remove_replica(request.app.state.gateway, me, replica_id)


@router.post("/serve", status_code=201)
def serve(body: ServeBody, request: Request, factory: FactoryDep, me: PrincipalDep) -> dict:
    """Launch replicas as service jobs on a site; each joins the rotation once healthy."""
    result = deployments.serve(
        request.app.state.gateway,
        me,
        body.model,
        body.site,
        body.replicas,
        body.path,
        body.engine,
        body.project,
        body.cpus,
        body.task,
    )
    scheduler = request.app.state.scheduler
    if scheduler is not None:
        scheduler.wake()
    return result


@router.put("/policies/{project}")
def policy(project: str, body: PolicyBody, request: Request, me: PrincipalDep) -> dict:
    """A project's token budget and the jurisdiction its requests stay in (operators)."""
    return deployments.set_policy(
        request.app.state.gateway, me, project, body.tokens, body.jurisdiction
    )
