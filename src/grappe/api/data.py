"""Datasets: the catalog, file uploads and downloads, access requests and decisions."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.data import access, catalog
from grappe.data.spec import DatasetSpec
from grappe.data.storage import iter_chunks

router = APIRouter(tags=["datasets"])


class AccessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(description="the project that will read the data")
    purpose: str = Field(description="what the data is for, in a sentence or two")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = ""
    expires: str | None = Field(
        default=None, description="grants only: a duration (30d) or a date (2027-06-30)"
    )


@router.get("/datasets")
def list_datasets(
    factory: FactoryDep, me: PrincipalDep, sector: str | None = None, search: str | None = None
) -> list[dict[str, Any]]:
    """The catalog: every member may browse it."""
    return catalog.list_datasets(factory, me, sector, search)


@router.post("/datasets", status_code=201)
def add_dataset(spec: DatasetSpec, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Add a dataset (operators); then upload its files."""
    return catalog.add_dataset(factory, me, spec)


@router.get("/datasets/{sector}/{name}")
def get_dataset(sector: str, name: str, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return catalog.get_dataset(factory, me, f"{sector}/{name}")


@router.get("/datasets/{sector}/{name}/versions")
def versions(sector: str, name: str, factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    return catalog.list_versions(factory, me, f"{sector}/{name}")


@router.put("/datasets/{sector}/{name}/versions/{version}/files/{filename:path}", status_code=201)
async def upload(
    sector: str,
    name: str,
    version: int,
    filename: str,
    request: Request,
    factory: FactoryDep,
    me: PrincipalDep,
    note: str = "",
) -> dict[str, Any]:
    """Store one file of a version, streamed as the raw body (operators)."""
    dataset = f"{sector}/{name}"
    await run_in_threadpool(catalog.check_upload, factory, me, dataset, version, filename)
    limit = factory.settings.max_dataset_file_bytes
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as body:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise catalog.PayloadTooLarge(
                    f"file {filename} is over {limit} bytes (GRAPPE_MAX_DATASET_FILE_BYTES)"
                )
            body.write(chunk)
        body.seek(0)
        return await run_in_threadpool(
            catalog.upload_file, factory, me, dataset, version, filename, iter_chunks(body), note
        )


@router.get(
    "/datasets/{sector}/{name}/files/{filename:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "the file; X-SHA256 and X-Dataset-Version say which",
        }
    },
)
def download(
    sector: str,
    name: str,
    filename: str,
    factory: FactoryDep,
    me: PrincipalDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    project: str | None = None,
) -> StreamingResponse:
    """A file of a version (the latest by default); restricted data needs a project's grant."""
    info, chunks = catalog.open_file(factory, me, f"{sector}/{name}", filename, version, project)
    return file_response(info, chunks)


def file_response(info: dict[str, Any], chunks: Iterator[bytes]) -> StreamingResponse:
    """A dataset file as a download, with its version and SHA-256 in headers (API and console)."""
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(info["size"]),
            "Content-Disposition": f'attachment; filename="{info["name"]}"',
            "X-Dataset-Version": str(info["version"]),
            "X-SHA256": info["sha256"],
        },
    )


@router.post("/datasets/{sector}/{name}/requests", status_code=201)
def request_access(
    sector: str, name: str, body: AccessRequest, factory: FactoryDep, me: PrincipalDep
) -> dict[str, Any]:
    """Ask for a project's access to restricted or health data."""
    return access.request_access(factory, me, f"{sector}/{name}", body.project, body.purpose)


@router.get("/data/requests")
def list_requests(
    factory: FactoryDep, me: PrincipalDep, state: str | None = None, dataset: str | None = None
) -> list[dict[str, Any]]:
    """Access requests: all of them for operators, their projects' for members."""
    return access.list_requests(factory, me, state, dataset)


@router.post("/data/requests/{request_id}/grant")
def grant(request_id: int, body: Decision, factory: FactoryDep, me: PrincipalDep) -> Any:
    return access.grant(factory, me, request_id, body.expires, body.reason)


@router.post("/data/requests/{request_id}/refuse")
def refuse(request_id: int, body: Decision, factory: FactoryDep, me: PrincipalDep) -> Any:
    return access.refuse(factory, me, request_id, body.reason)


@router.post("/data/requests/{request_id}/revoke")
def revoke(request_id: int, body: Decision, factory: FactoryDep, me: PrincipalDep) -> Any:
    return access.revoke(factory, me, request_id, body.reason)
