"""One job: its state timeline, where it was placed and why, and its logs, live.

The page is whole without JavaScript (state, timeline, placement and the output
so far); a script then follows ``/jobs/{id}/events``, a Server-Sent Events
stream that sends new output as it is written and the status panel again
whenever the job moves, and ends when the job does.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from grappe.console import nav
from grappe.console.web import ConsoleRoute, Ctx, MemberDep, see_other
from grappe.domain.jobs import JobState
from grappe.services import jobs
from grappe.services.errors import ServiceError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

POLL_S = 0.5
STREAM_MAX_S = 3600  # a browser reconnects after this, from where it was
FIRST_LOG_BYTES = 1 << 20


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (the data is JSON on one line)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _status(ctx: Ctx, job: dict[str, Any]) -> str:
    return ctx.render("_job_status.html", job=job).body.decode()


@router.get("/jobs/{job_id}")
def job_page(job_id: int, ctx: MemberDep) -> Response:
    job = jobs.get_job(ctx.factory, ctx.principal, job_id)
    try:
        output, _, attempt = jobs.job_logs(ctx.factory, ctx.principal, job_id, 0, FIRST_LOG_BYTES)
    except ServiceError:  # the site is not answering: the stream will try again
        output, attempt = b"", job["attempt"]
    return ctx.render(
        "job.html",
        job=job,
        logs=output.decode(errors="replace"),
        offset=len(output),
        attempt=attempt,
        terminal=JobState(job["state"]).terminal,
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: int, ctx: MemberDep) -> Response:
    ctx.check_form(await ctx.request.form())
    jobs.cancel_job(ctx.factory, ctx.principal, job_id)
    return see_other(f"/jobs/{job_id}")


def _read(
    ctx: Ctx, job_id: int, offset: int, attempt: int
) -> tuple[dict[str, Any], bytes, JobState, int]:
    """One look at the job: its view and its new output (all of it if a retry began)."""
    job = jobs.get_job(ctx.factory, ctx.principal, job_id)
    chunk, state, now = jobs.job_logs(ctx.factory, ctx.principal, job_id, offset)
    if now != attempt:
        # A retry writes a new output file: read it from its start.
        chunk, state, now = jobs.job_logs(ctx.factory, ctx.principal, job_id, 0)
    if state.terminal and not chunk:
        # The view read before the logs may predate the end: show the final one.
        job = jobs.get_job(ctx.factory, ctx.principal, job_id)
    return job, chunk, state, now


@router.get("/jobs/{job_id}/events")
def events(
    job_id: int,
    ctx: MemberDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    attempt: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """New output from ``offset`` of ``attempt``, and the status whenever it changes.

    The stream waits with the event loop, not a worker thread, so open pages never
    starve the API's threads, and it stops when the browser goes away.
    """
    jobs.get_job(ctx.factory, ctx.principal, job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        nonlocal offset, attempt
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        seen: tuple[Any, ...] = ()
        deadline = time.monotonic() + STREAM_MAX_S
        while time.monotonic() < deadline:
            try:
                job, chunk, state, now = await run_in_threadpool(
                    _read, ctx, job_id, offset, attempt
                )
            except ServiceError as exc:
                yield sse("problem", {"message": exc.message})
                await asyncio.sleep(POLL_S * 4)
                continue
            if now != attempt:
                if attempt:
                    yield sse("log", {"text": f"\n--- attempt {now} ---\n", "offset": 0})
                attempt, offset = now, 0
                decoder.reset()
            if chunk:
                offset += len(chunk)
                text = decoder.decode(chunk)
                yield sse("log", {"text": text, "offset": offset, "attempt": attempt})
            moved = (job["state"], job["reason"], len(job["history"]), json.dumps(job["placement"]))
            if moved != seen:
                seen = moved
                yield sse("status", {"state": job["state"], "html": _status(ctx, job)})
            if state.terminal and not chunk:
                yield sse("end", {"state": str(state)})
                return
            if not chunk:
                await asyncio.sleep(POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


nav.register("job_detail", router)
