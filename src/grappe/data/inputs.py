"""Datasets in jobs: ``inputs`` checked at submission, described to placement, staged at launch.

A job names its inputs ``sector/name`` (the latest version) or
``sector/name@N``. Submission checks that the job's project may read each one
and pins the version it will get, so a later upload never changes a queued
job's data. Placement then sees each input's sensitivity, size and residency;
a grant revoked or expired while the job waits keeps it from being placed,
with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from grappe.data import access
from grappe.data.catalog import storage
from grappe.domain.datasets import DataFile, DataInput, DataNeed, Sensitivity, dataset_id_problem
from grappe.domain.jobs import JobRequest
from grappe.runtime import Factory
from grappe.services.errors import Invalid
from grappe.store import data_repo as dr
from grappe.store import project_repo
from grappe.store.tables import DatasetRow, JobRow, utcnow


def parse_input(field: str, value: str) -> tuple[str, int | None]:
    """``sector/name[@N]`` -> (id, version or None)."""
    dataset, sep, number = value.partition("@")
    problem = dataset_id_problem(dataset)
    if problem:
        raise Invalid(field, value, problem)
    if sep and not (number.isdigit() and int(number) >= 1):
        raise Invalid(field, value, "a version is a whole number from 1, e.g. energy/x@2")
    return dataset, int(number) if sep else None


def pin_inputs(factory: Factory, project: str, inputs: list[str]) -> list[str]:
    """Check the project may read every input; returns them as ``id@version``."""
    pinned: list[str] = []
    now = utcnow()
    with factory.store.session() as s:
        for i, value in enumerate(inputs):
            field = f"inputs[{i}]"
            dataset, number = parse_input(field, value)
            row = dr.dataset(s, dataset)
            if row is None:
                raise Invalid(field, value, "no such dataset; `grappe data ls` lists the catalog")
            version = dr.version(s, dataset, number)
            if version is None:
                known = [v.version for v in dr.versions(s, dataset)]
                raise Invalid(
                    field,
                    value,
                    f"dataset {dataset} has no version {number} (it has {known})"
                    if number
                    else f"dataset {dataset} has no files yet",
                )
            refusal = access.project_refusal(s, row, project, now)
            if refusal:
                raise Invalid(field, value, refusal)
            pinned.append(f"{dataset}@{version.version}")
    if len(set(pinned)) != len(pinned):
        raise Invalid("inputs", inputs, "a dataset is named twice; name each input once")
    return pinned


def _need(s: Any, row: DatasetRow, version: int, project: str, now: Any) -> DataNeed:
    v = dr.version(s, row.id, version)
    size = sum(f.size for f in dr.files(s, [v.id])[v.id]) if v else 0
    return DataNeed(
        dataset=row.id,
        version=version,
        sensitivity=Sensitivity(row.sensitivity),
        size_bytes=size,
        residency=tuple(row.residency or ()),
        allowed_sites=tuple(row.allowed_sites or ()),
        refusal=access.project_refusal(s, row, project, now)
        or (None if v else f"dataset {row.id} has no version {version} any more"),
    )


def needs(s: Any, inputs: Iterable[str], project: str) -> tuple[DataNeed, ...]:
    """What placement must know of each (pinned or not) input, as the store says now."""
    now, found = utcnow(), []
    for i, value in enumerate(inputs):
        dataset, number = parse_input(f"inputs[{i}]", value)
        row = dr.dataset(s, dataset)
        if row is None:
            found.append(
                DataNeed(dataset, number or 0, Sensitivity.OPEN, 0, refusal=f"no dataset {dataset}")
            )
            continue
        latest = dr.version(s, dataset, number)
        found.append(_need(s, row, latest.version if latest else (number or 0), project, now))
    return tuple(found)


def with_needs(factory: Factory, request: JobRequest, inputs: list[str]) -> JobRequest:
    """``request`` with its inputs described (``grappe plan``, submission)."""
    if not inputs:
        return request
    with factory.store.session() as s:
        return replace(request, inputs=needs(s, inputs, request.project))


def needs_by_job(
    s: Any, rows: Iterable[JobRow], projects: Mapping[int, str]
) -> dict[int, tuple[DataNeed, ...]]:
    """For a scheduler pass: the inputs of each pending job that has some."""
    return {
        r.id: needs(s, r.spec.get("inputs") or (), projects[r.project_id])
        for r in rows
        if r.spec.get("inputs")
    }


def launch_inputs(factory: Factory, row: JobRow, owner: str) -> tuple[DataInput, ...]:
    """The pinned versions a backend stages for the job; each read is audited."""
    values = row.spec.get("inputs") or ()
    if not values:
        return ()
    store, found = storage(factory), []
    with factory.store.session() as s:
        for i, value in enumerate(values):
            dataset, number = parse_input(f"inputs[{i}]", value)
            v = dr.version(s, dataset, number)
            if v is None:
                continue  # placement refused it already; nothing to stage
            files = tuple(
                DataFile(f.name, f.size, f.sha256, store.file_url(dataset, v.version, f.name))
                for f in dr.files(s, [v.id])[v.id]
            )
            row_ds = dr.dataset(s, dataset)
            site = factory.sites.get(row.site or "")
            local = (
                f"{site.datasets_path}/{dataset}/{v.version}"
                if site and site.datasets_path and row_ds and site.name in (row_ds.residency or ())
                else None
            )
            found.append(DataInput(dataset, v.version, files, local))
            project_repo.audit(
                s, owner, "data.read", dataset, version=v.version, job=row.id, site=row.site
            )
    return tuple(found)
