"""Projects, allocations, members, usage, users and tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.services import accounts, auth, projects

router = APIRouter(tags=["projects"])
MAX_DAYS = 100 * 366  # a period beyond a century is a typo, and overflows dates


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    gpu_hours: float = Field(ge=0)
    cpu_hours: float = Field(default=0.0, ge=0)
    days: int = Field(default=projects.DEFAULT_PERIOD_DAYS, ge=1, le=MAX_DAYS)
    description: str = ""
    priority: int = Field(default=0, ge=-100, le=100)
    members: list[str] = Field(default_factory=list)


class AllocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu_hours: float = Field(ge=0)
    cpu_hours: float = Field(default=0.0, ge=0)
    days: int = Field(default=projects.DEFAULT_PERIOD_DAYS, ge=1, le=MAX_DAYS)


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: str = "member"
    project: str | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None


@router.get("/projects")
def list_projects(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    return projects.list_projects(factory.store, me)


@router.post("/projects", status_code=201)
def create_project(body: ProjectCreate, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return projects.create_project(
        factory.store,
        me,
        body.name,
        body.gpu_hours,
        body.cpu_hours,
        body.days,
        body.description,
        body.priority,
        body.members,
    )


@router.get("/projects/{name}")
def get_project(name: str, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return projects.get_project(factory.store, me, name)


@router.post("/projects/{name}/allocations", status_code=201)
def allocate(
    name: str, body: AllocationCreate, factory: FactoryDep, me: PrincipalDep
) -> dict[str, Any]:
    return projects.allocate(factory.store, me, name, body.gpu_hours, body.cpu_hours, body.days)


@router.post("/projects/{name}/members", status_code=201)
def add_member(name: str, body: MemberAdd, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return projects.add_member(factory.store, me, name, body.user)


@router.get("/usage")
def usage(factory: FactoryDep, me: PrincipalDep, project: str | None = None) -> dict[str, Any]:
    return projects.usage_report(factory.store, me, project)


@router.post("/users", status_code=201)
def create_user(body: UserCreate, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    name, token = auth.create_user(factory.store, me, body.name, body.role, body.project)
    return {"name": name, "role": body.role, "token": token}


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return {"user": body.user or me.name, "token": auth.create_token(factory.store, me, body.user)}


class SiteAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    user: str = Field(description="your user name on the site")
    private_key: str | None = Field(
        default=None, description="the text of a private key the site's login node accepts"
    )


@router.get("/site-accounts")
def list_site_accounts(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """Your accounts on sites (every member's, for operators); keys are never returned."""
    return accounts.list_accounts(factory, me)


@router.post("/site-accounts", status_code=201)
def add_site_account(
    body: SiteAccountCreate, factory: FactoryDep, me: PrincipalDep
) -> dict[str, Any]:
    """Register your own account on a site; your jobs there run as it."""
    return accounts.add_account(factory, me, body.site, body.user, body.private_key)


@router.delete("/site-accounts/{site}")
def remove_site_account(site: str, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return accounts.remove_account(factory, me, site)
