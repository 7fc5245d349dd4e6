"""Quantum tasks over HTTP: devices, tasks and their results, sessions, shot allocations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.quantum import tasks

router = APIRouter(prefix="/quantum", tags=["quantum"])


class TaskBody(BaseModel):
    """A quantum task: ``program`` is the program's text; ``backend`` a device or site/device."""

    model_config = ConfigDict(extra="forbid")

    program: str
    format: str | None = None
    shots: int = 1000
    modality: str | None = None
    backend: str | None = None
    project: str | None = None
    name: str | None = None


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    backend: str
    starts: datetime | None = Field(default=None, description="ISO 8601; now if unset")
    minutes: int = Field(default=60, ge=1, le=366 * 24 * 60)


class AllocationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    shots: int = 0
    seconds: float = 0.0
    days: int = Field(default=30, ge=1, le=100 * 366)


@router.get("/backends")
def backends(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """Every quantum device: modality, qubits or modes, connectivity, shots, price, jurisdiction."""
    return tasks.backends(factory)


@router.post("/tasks", status_code=201)
def submit(
    body: TaskBody,
    factory: FactoryDep,
    me: PrincipalDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> Any:
    """Queue a quantum task; it is a job, listed by ``/jobs`` too."""
    data = body.model_dump(exclude_none=True)
    job = tasks.submit(factory, me, data, idempotency_key)
    scheduler = request.app.state.scheduler
    if scheduler is not None:
        scheduler.wake()
    return JSONResponse(status_code=201, content=job)


@router.get("/tasks/{job_id}")
def result(job_id: int, factory: FactoryDep, me: PrincipalDep, download: bool = False) -> Any:
    """The task's state and, once it ended, its counts; ``download=true`` serves a file."""
    view = tasks.result(factory, me, job_id)
    headers = (
        {"Content-Disposition": f'attachment; filename="quantum-{job_id}.json"'}
        if download
        else None
    )
    return JSONResponse(content=view, headers=headers)


@router.get("/sessions")
def sessions(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """Device reservations of the caller's projects (all of them for operators)."""
    return tasks.list_sessions(factory, me)


@router.post("/sessions", status_code=201)
def create_session(body: SessionBody, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Reserve a device for a project's tasks over a time window."""
    starts = body.starts or datetime.now(UTC)
    if starts.tzinfo is None:
        starts = starts.replace(tzinfo=UTC)
    return tasks.create_session(factory, me, body.project, body.backend, starts, body.minutes)


@router.post("/allocations", status_code=201)
def allocate(body: AllocationBody, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Grant a project shots and QPU-seconds (operators)."""
    return tasks.allocate(factory, me, body.project, body.shots, body.seconds, body.days)
