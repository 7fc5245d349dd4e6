"""Repositories of the dataset catalog: datasets, versions, files and access requests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from grappe.store.tables import (
    DataAccessRow,
    DatasetFileRow,
    DatasetRow,
    DatasetVersionRow,
    ProjectRow,
)


def dataset(s: Session, dataset_id: str) -> DatasetRow | None:
    return s.get(DatasetRow, dataset_id)


def list_datasets(s: Session, sector: str | None, search: str | None) -> list[DatasetRow]:
    query = select(DatasetRow).order_by(DatasetRow.id)
    if sector:
        query = query.where(DatasetRow.sector == sector)
    if search:
        like = f"%{search.lower()}%"
        query = query.where(
            or_(
                func.lower(DatasetRow.id).like(like),
                func.lower(DatasetRow.title).like(like),
                func.lower(DatasetRow.description).like(like),
                func.lower(DatasetRow.publisher).like(like),
            )
        )
    return list(s.scalars(query))


def add_dataset(s: Session, row: DatasetRow) -> DatasetRow:
    s.add(row)
    s.flush()
    return row


def versions(s: Session, dataset_id: str) -> list[DatasetVersionRow]:
    query = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == dataset_id)
    return list(s.scalars(query.order_by(DatasetVersionRow.version)))


def version(s: Session, dataset_id: str, number: int | None) -> DatasetVersionRow | None:
    """Version ``number`` of the dataset, or its latest one with ``None``."""
    query = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == dataset_id)
    if number is not None:
        return s.scalars(query.where(DatasetVersionRow.version == number)).first()
    return s.scalars(query.order_by(DatasetVersionRow.version.desc()).limit(1)).first()


def add_version(
    s: Session, dataset_id: str, number: int, actor: str, note: str, now: datetime
) -> DatasetVersionRow:
    row = DatasetVersionRow(
        dataset_id=dataset_id, version=number, note=note, created_by=actor, created_at=now
    )
    s.add(row)
    s.flush()
    return row


def files(s: Session, version_ids: Iterable[int]) -> dict[int, list[DatasetFileRow]]:
    """The files of each version, by name."""
    ids = list(version_ids)
    found: dict[int, list[DatasetFileRow]] = {i: [] for i in ids}
    if not ids:
        return found
    query = select(DatasetFileRow).where(DatasetFileRow.version_id.in_(ids))
    for row in s.scalars(query.order_by(DatasetFileRow.name)):
        found[row.version_id].append(row)
    return found


def add_file(
    s: Session, version_id: int, name: str, size: int, sha256: str, now: datetime
) -> DatasetFileRow:
    row = DatasetFileRow(version_id=version_id, name=name, size=size, sha256=sha256, created_at=now)
    s.add(row)
    s.flush()
    return row


def add_access(s: Session, row: DataAccessRow) -> DataAccessRow:
    s.add(row)
    s.flush()
    return row


def access(s: Session, request_id: int, lock: bool = False) -> DataAccessRow | None:
    return s.get(DataAccessRow, request_id, with_for_update=lock)


def list_access(
    s: Session,
    states: Iterable[str] = (),
    dataset_id: str | None = None,
    project_ids: Iterable[int] | None = None,
) -> list[tuple[DataAccessRow, str]]:
    """Access requests (newest first) with their project's name."""
    query = select(DataAccessRow, ProjectRow.name).join(
        ProjectRow, ProjectRow.id == DataAccessRow.project_id
    )
    wanted = list(states)
    if wanted:
        query = query.where(DataAccessRow.state.in_(wanted))
    if dataset_id:
        query = query.where(DataAccessRow.dataset_id == dataset_id)
    if project_ids is not None:
        query = query.where(DataAccessRow.project_id.in_(list(project_ids)))
    return [(r, name) for r, name in s.execute(query.order_by(DataAccessRow.id.desc()))]


def live_grant(s: Session, dataset_id: str, project_id: int, now: datetime) -> DataAccessRow | None:
    """A granted, unexpired access of the project to the dataset."""
    query = select(DataAccessRow).where(
        DataAccessRow.dataset_id == dataset_id,
        DataAccessRow.project_id == project_id,
        DataAccessRow.state == "granted",
        or_(DataAccessRow.expires_at.is_(None), DataAccessRow.expires_at > now),
    )
    return s.scalars(query.order_by(DataAccessRow.id.desc()).limit(1)).first()


def last_decision(s: Session, dataset_id: str, project_id: int) -> DataAccessRow | None:
    """The project's latest request for the dataset, whatever became of it."""
    query = select(DataAccessRow).where(
        DataAccessRow.dataset_id == dataset_id, DataAccessRow.project_id == project_id
    )
    return s.scalars(query.order_by(DataAccessRow.id.desc()).limit(1)).first()
