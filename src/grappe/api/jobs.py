"""Jobs: submit, plan, list, show, cancel, logs; and uploads of job directories."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.services import jobs
from grappe.services.errors import Invalid
from grappe.spec.jobspec import JobSpec
from grappe.store import job_repo

router = APIRouter(tags=["jobs"])

FOLLOW_POLL_S = 0.5


@router.post("/jobs", status_code=201)
def submit(
    spec: JobSpec,
    factory: FactoryDep,
    me: PrincipalDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> Any:
    """Queue a job. Send ``Idempotency-Key`` to make a retried request return the same job."""
    job, created = jobs.submit_job(factory, me, spec, idempotency_key)
    scheduler = request.app.state.scheduler
    if created and scheduler is not None:
        scheduler.wake()
    return JSONResponse(status_code=201 if created else 200, content=job)


@router.post("/jobs/plan")
def plan(spec: JobSpec, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Where the job would run now, the score of each candidate, and why others are rejected."""
    return jobs.plan(factory, me, spec)


@router.get("/jobs")
def list_jobs(
    factory: FactoryDep,
    me: PrincipalDep,
    state: Annotated[list[str] | None, Query()] = None,
    project: str | None = None,
    mine: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    return jobs.list_jobs(factory, me, state, project, mine, limit)


@router.get("/jobs/{job_id}")
def get_job(job_id: int, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return jobs.get_job(factory, me, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: int, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    return jobs.cancel_job(factory, me, job_id)


def attempt_marker(attempt: int) -> bytes:
    """The line a followed stream shows when a retry starts a new attempt."""
    return f"\n--- grappe: attempt {attempt} ---\n".encode()


@router.get(
    "/jobs/{job_id}/logs",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "the output; X-Job-State and X-Job-Attempt say where the job is",
        }
    },
)
def logs(
    job_id: int,
    factory: FactoryDep,
    me: PrincipalDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    follow: bool = False,
    attempt: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    """The job's output from ``offset`` in its current attempt.

    With ``follow`` the stream stays open until the job ends; when a retry starts
    another attempt, a marker line is sent and its output follows from its start.
    ``attempt`` says which attempt ``offset`` counts in (a client resuming a stream);
    if the job has moved on, the new attempt is sent from its start.
    """
    first, state, current = jobs.job_logs(factory, me, job_id, offset)
    if attempt is not None and attempt != current:
        offset = 0
        first, state, current = jobs.job_logs(factory, me, job_id, 0)

    def stream() -> Iterator[bytes]:
        nonlocal offset, state, current
        chunk = first
        # Attempt 0 means the job had not started anywhere: its first attempt is no retry.
        if attempt and current and attempt != current and follow:
            yield attempt_marker(current)
        while True:
            if chunk:
                offset += len(chunk)
                yield chunk
            if not follow:
                return
            if state.terminal and not chunk:
                return
            if not chunk:
                time.sleep(FOLLOW_POLL_S)
            chunk, state, now = jobs.job_logs(factory, me, job_id, offset)
            if now != current:
                # A retry began: its output is a new file, read from its start.
                if current:
                    yield attempt_marker(now)
                current, offset = now, 0
                chunk, state, _ = jobs.job_logs(factory, me, job_id, 0)

    return StreamingResponse(
        stream(),
        media_type="text/plain; charset=utf-8",
        headers={"X-Job-State": str(state), "X-Job-Attempt": str(current)},
    )


@router.post("/uploads", status_code=201)
async def upload(request: Request, factory: FactoryDep, me: PrincipalDep) -> dict[str, Any]:
    """Store a job directory sent as a gzip'd tar; returns the ``workdir`` value to use."""
    limit = factory.settings.max_upload_bytes
    factory.settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=factory.settings.uploads_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Invalid("body", f"{size}+ bytes", f"uploads are limited to {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
        try:
            with tarfile.open(tmp, "r:gz") as tar:
                for member in tar:
                    if member.name.startswith("/") or ".." in member.name.split("/"):
                        raise Invalid("body", member.name, "archive members must stay inside it")
                    try:  # links out of the tree, device files
                        tarfile.data_filter(member, "/upload")
                    except tarfile.FilterError as exc:
                        raise Invalid(
                            "body", member.name, f"archive members must stay inside it ({exc})"
                        ) from None
        except (tarfile.TarError, EOFError, OSError):
            raise Invalid("body", f"{size} bytes", "send a gzip-compressed tar archive") from None
        sha = digest.hexdigest()
        os.replace(tmp, factory.settings.uploads_dir / f"{sha}.tar.gz")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with factory.store.session() as s:
        job_repo.add_upload(s, sha, me.user_id, size)
    return {"sha256": sha, "size": size, "workdir": f"{jobs.UPLOAD_PREFIX}{sha}"}
