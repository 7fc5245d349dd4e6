"""Store access for quantum tasks: shot allocations, shots charged, and the tasks' results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grappe.store.tables import (
    QuantumAllocationRow,
    QuantumResultRow,
    QuantumUsageRow,
    utcnow,
)


@dataclass(frozen=True)
class QuantumBalance:
    """A project's quantum allocation (``None``: not capped) and what it used in its period."""

    qpu_shots: int | None
    qpu_seconds: float | None
    used_shots: int
    used_seconds: float
    eur: float
    starts: datetime | None = None
    ends: datetime | None = None

    @property
    def shots_left(self) -> int | None:
        return None if self.qpu_shots is None else self.qpu_shots - self.used_shots


def add_allocation(
    s: Session, project_id: int, shots: int, seconds: float, starts: datetime, ends: datetime
) -> None:
    s.add(
        QuantumAllocationRow(
            project_id=project_id,
            qpu_shots=shots,
            qpu_seconds=seconds,
            starts=starts,
            ends=ends,
            created_at=utcnow(),
        )
    )
    s.flush()


def balance(s: Session, project_id: int, now: datetime) -> QuantumBalance:
    """Shots and seconds granted now (the newest allocation covering ``now``) and used in it."""
    row = s.scalars(
        select(QuantumAllocationRow)
        .where(
            QuantumAllocationRow.project_id == project_id,
            QuantumAllocationRow.starts <= now,
            QuantumAllocationRow.ends > now,
        )
        .order_by(QuantumAllocationRow.created_at.desc(), QuantumAllocationRow.id.desc())
    ).first()
    query = select(
        func.coalesce(func.sum(QuantumUsageRow.qpu_shots), 0),
        func.coalesce(func.sum(QuantumUsageRow.qpu_seconds), 0.0),
        func.coalesce(func.sum(QuantumUsageRow.eur), 0.0),
    ).where(QuantumUsageRow.project_id == project_id)
    if row is not None:
        query = query.where(QuantumUsageRow.at >= row.starts, QuantumUsageRow.at < row.ends)
    shots, seconds, eur = s.execute(query).one()
    if row is None:
        return QuantumBalance(None, None, int(shots), float(seconds), float(eur))
    return QuantumBalance(
        row.qpu_shots, row.qpu_seconds, int(shots), float(seconds), float(eur), row.starts, row.ends
    )


def add_usage(s: Session, **fields: Any) -> bool:
    """Charge one attempt's shots and seconds once; ``False`` if it was already charged."""
    exists = s.scalar(
        select(QuantumUsageRow.id).where(
            QuantumUsageRow.job_id == fields["job_id"], QuantumUsageRow.attempt == fields["attempt"]
        )
    )
    if exists is not None:
        return False
    try:
        with s.begin_nested():
            s.add(QuantumUsageRow(**fields))
    except IntegrityError:
        return False
    return True


def job_usage(s: Session, job_id: int) -> list[QuantumUsageRow]:
    return list(
        s.scalars(
            select(QuantumUsageRow)
            .where(QuantumUsageRow.job_id == job_id)
            .order_by(QuantumUsageRow.attempt)
        )
    )


def put_result(s: Session, job_id: int, attempt: int, result: dict[str, Any]) -> None:
    row = s.get(QuantumResultRow, job_id)
    if row is None:
        s.add(QuantumResultRow(job_id=job_id, attempt=attempt, result=result, recorded_at=utcnow()))
    else:
        row.attempt, row.result, row.recorded_at = attempt, result, utcnow()
    s.flush()


def result(s: Session, job_id: int) -> dict[str, Any] | None:
    row = s.get(QuantumResultRow, job_id)
    return None if row is None else dict(row.result)
