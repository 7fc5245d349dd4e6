"""What the scheduler records when a quantum task's attempt ends: its shots and its counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from grappe.backends.base import Status
from grappe.domain.accounting import Charge
from grappe.domain.jobs import Job, JobState
from grappe.store import quantum as store


def shots_charged(job: Job, status: Status) -> int:
    """Shots charged for an ended attempt: all of them when it succeeded, none otherwise."""
    need = job.request.quantum
    return need.shots if need is not None and status.state == JobState.SUCCEEDED else 0


def record_attempt(
    s: Session,
    backend: Any,
    row: Any,
    cost: Charge,
    at: datetime,
) -> None:
    """Charge the attempt's shots and device seconds; keep its counts as the job's result."""
    store.add_usage(
        s,
        project_id=row.project_id,
        job_id=row.id,
        attempt=row.attempt,
        site=row.site or "",
        device=row.pool or "",
        qpu_shots=cost.qpu_shots,
        qpu_seconds=cost.qpu_seconds,
        eur=cost.eur,
        at=at,
    )
    read = getattr(backend, "result", None)
    result = read(row.handle) if read is not None and row.handle else None
    if result is not None:
        store.put_result(s, row.id, row.attempt, result)
