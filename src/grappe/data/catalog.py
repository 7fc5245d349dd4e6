"""Catalog use cases: list, show, add, versions, upload and download of dataset files.

Every member may browse the catalog. Reading files needs access (see
``access``); adding datasets and uploading their files is an operator's job.
Versions are immutable: a file once stored in a version is never replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from grappe.data import access
from grappe.data.spec import DatasetSpec
from grappe.data.storage import DataStorage, TooLarge
from grappe.domain.datasets import dataset_id_problem, file_name_problem
from grappe.runtime import Factory
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, NotFound, ServiceError
from grappe.store import data_repo as dr
from grappe.store import project_repo
from grappe.store.tables import DatasetFileRow, DatasetRow, DatasetVersionRow, utcnow


class PayloadTooLarge(ServiceError):
    status = 413
    code = "too_large"


@lru_cache(maxsize=8)
def _storage(url: str) -> DataStorage:
    return DataStorage(url)


def storage(factory: Factory) -> DataStorage:
    """Where this factory keeps dataset files (``GRAPPE_DATA_URL``)."""
    return _storage(factory.settings.data_storage_url)


def check_id(dataset_id: str) -> str:
    problem = dataset_id_problem(dataset_id)
    if problem:
        raise Invalid("dataset", dataset_id, problem)
    return dataset_id


def check_file_name(name: str) -> str:
    problem = file_name_problem(name)
    if problem:
        raise Invalid("file", name, problem)
    return name


def dataset_row(s: Any, dataset_id: str) -> DatasetRow:
    row = dr.dataset(s, check_id(dataset_id))
    if row is None:
        raise NotFound(f"dataset {dataset_id} does not exist; `grappe data ls` lists the catalog")
    return row


def file_view(f: DatasetFileRow) -> dict[str, Any]:
    return {"name": f.name, "size": f.size, "sha256": f.sha256}


def version_view(v: DatasetVersionRow, files: list[DatasetFileRow]) -> dict[str, Any]:
    return {
        "version": v.version,
        "note": v.note,
        "created_by": v.created_by,
        "created_at": v.created_at.isoformat(),
        "size": sum(f.size for f in files),
        "files": [file_view(f) for f in files],
    }


def dataset_view(row: DatasetRow, latest: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "sector": row.sector,
        "title": row.title,
        "description": row.description,
        "publisher": row.publisher,
        "licence": row.licence,
        "source": row.source,
        "sensitivity": row.sensitivity,
        "residency": list(row.residency or []),
        "allowed_sites": list(row.allowed_sites or []),
        "latest_version": latest["version"] if latest else None,
        "size": latest["size"] if latest else 0,
    }


def _latest(s: Any, rows: list[DatasetRow]) -> dict[str, dict[str, Any]]:
    found = {}
    for row in rows:
        v = dr.version(s, row.id, None)
        if v is not None:
            found[row.id] = version_view(v, dr.files(s, [v.id])[v.id])
    return found


def list_datasets(
    factory: Factory, actor: Principal, sector: str | None = None, search: str | None = None
) -> list[dict[str, Any]]:
    """The catalog, optionally one sector's or matching ``search`` (id, title, description)."""
    with factory.store.session() as s:
        rows = dr.list_datasets(s, sector, search)
        latest = _latest(s, rows)
        return [dataset_view(r, latest.get(r.id)) for r in rows]


def get_dataset(factory: Factory, actor: Principal, dataset_id: str) -> dict[str, Any]:
    """One dataset with all its versions and files, and what the caller's projects may do."""
    with factory.store.session() as s:
        row = dataset_row(s, dataset_id)
        versions = dr.versions(s, row.id)
        files = dr.files(s, [v.id for v in versions])
        views = [version_view(v, files[v.id]) for v in versions]
        view = dataset_view(row, views[-1] if views else None)
        view["versions"] = views
        view["access"] = access.access_summary(s, actor, row)
        return view


def add_dataset(factory: Factory, actor: Principal, spec: DatasetSpec) -> dict[str, Any]:
    """Add a dataset to the catalog (operators); its files come with ``upload``."""
    actor.require_staff("adding datasets")
    for field in ("residency", "allowed_sites"):
        for site in getattr(spec, field):
            if site not in factory.sites:
                known = ", ".join(factory.sites)
                raise Invalid(field, site, f"no such site; declared sites: {known}")
    with factory.store.session() as s:
        if dr.dataset(s, spec.id) is not None:
            raise Conflict(f"dataset {spec.id} exists already; upload a new version instead")
        row = dr.add_dataset(
            s,
            DatasetRow(
                id=spec.id,
                sector=spec.sector,
                title=spec.title,
                description=spec.description,
                publisher=spec.publisher,
                licence=spec.licence,
                source=spec.source,
                sensitivity=str(spec.sensitivity),
                residency=list(spec.residency),
                allowed_sites=list(spec.allowed_sites),
                created_by=actor.name,
                created_at=utcnow(),
            ),
        )
        project_repo.audit(s, actor.name, "data.add", row.id, sensitivity=row.sensitivity)
        return dataset_view(row, None)


def list_versions(factory: Factory, actor: Principal, dataset_id: str) -> list[dict[str, Any]]:
    with factory.store.session() as s:
        row = dataset_row(s, dataset_id)
        versions = dr.versions(s, row.id)
        files = dr.files(s, [v.id for v in versions])
        return [version_view(v, files[v.id]) for v in versions]


def check_upload(
    factory: Factory, actor: Principal, dataset_id: str, version: int, name: str
) -> None:
    """Refuse an upload before its body is read: who, which version, which file name."""
    actor.require_staff("uploading dataset files")
    check_file_name(name)
    with factory.store.session() as s:
        row = dataset_row(s, dataset_id)
        latest = dr.version(s, row.id, None)
        last = latest.version if latest else 0
        if version not in (last, last + 1) or version < 1:
            raise Invalid(
                "version",
                version,
                f"dataset {row.id} is at version {last}; add files to {last or 1}"
                + (f" or start {last + 1}" if last else ""),
            )
        existing = dr.version(s, row.id, version)
        if existing is not None and any(
            f.name == name for f in dr.files(s, [existing.id])[existing.id]
        ):
            raise Conflict(
                f"{row.id} version {version} already holds {name}; versions are immutable: "
                f"upload to version {last + 1}"
            )


def upload_file(
    factory: Factory,
    actor: Principal,
    dataset_id: str,
    version: int,
    name: str,
    chunks: Iterable[bytes],
    note: str = "",
) -> dict[str, Any]:
    """Store one file in ``version`` (the next version number creates it). Operators only."""
    check_upload(factory, actor, dataset_id, version, name)
    limit = factory.settings.max_dataset_file_bytes
    try:
        size, sha = storage(factory).write(dataset_id, version, name, chunks, limit)
    except TooLarge:
        raise PayloadTooLarge(
            f"file {name} is over {limit} bytes (GRAPPE_MAX_DATASET_FILE_BYTES); split it"
        ) from None
    now = utcnow()
    with factory.store.session() as s:
        v = dr.version(s, dataset_id, version) or dr.add_version(
            s, dataset_id, version, actor.name, note, now
        )
        if any(f.name == name for f in dr.files(s, [v.id])[v.id]):
            raise Conflict(f"{dataset_id} version {version} already holds {name}")
        dr.add_file(s, v.id, name, size, sha, now)
        project_repo.audit(
            s, actor.name, "data.upload", dataset_id, version=version, file=name, size=size
        )
    return {"dataset": dataset_id, "version": version, "name": name, "size": size, "sha256": sha}


def open_file(
    factory: Factory,
    actor: Principal,
    dataset_id: str,
    name: str,
    version: int | None = None,
    project: str | None = None,
) -> tuple[dict[str, Any], Iterator[bytes]]:
    """A file to download, once the caller's access is checked; the read is audited."""
    check_file_name(name)
    with factory.store.session() as s:
        row = dataset_row(s, dataset_id)
        via = access.require_read(s, actor, row, project)
        v = dr.version(s, row.id, version)
        if v is None:
            raise NotFound(
                f"dataset {row.id} has no version {version}"
                if version
                else f"dataset {row.id} has no files yet"
            )
        f = next((f for f in dr.files(s, [v.id])[v.id] if f.name == name), None)
        if f is None:
            raise NotFound(f"{row.id} version {v.version} has no file {name}")
        project_repo.audit(
            s, actor.name, "data.read", row.id, version=v.version, file=name, project=via
        )
        info = {**file_view(f), "dataset": row.id, "version": v.version}
    return info, storage(factory).read(row.id, info["version"], name)
