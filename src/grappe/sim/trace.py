"""Reading GPU-cluster job traces: one job a row, with a clear error for a bad row.

The format is CSV with a header. Required columns: ``job_id``, ``submit_time_s``,
``num_gpus``, ``duration_s``; optional: ``gpu_type``, ``user``, ``vc`` (the
virtual cluster or team), ``status``. Other columns are ignored, so traces
converted from other sources (the Philly trace's ``num_nodes``, say) load
as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("job_id", "submit_time_s", "num_gpus", "duration_s")
OPTIONAL = ("gpu_type", "user", "vc", "status")


@dataclass(frozen=True)
class TraceJob:
    job_id: str
    submit_time_s: float
    num_gpus: int
    duration_s: float
    gpu_type: str | None = None
    user: str | None = None
    vc: str | None = None
    status: str | None = None

    @property
    def group(self) -> str:
        """Who the job belongs to, for fairness: its virtual cluster, else its user."""
        return self.vc or self.user or "all"


class TraceError(ValueError):
    """A trace that cannot be read; the message names the file, line, column and value."""


def _number(path: Path, line: int, column: str, text: str, kind: type) -> float:
    try:
        value = kind(text) if kind is float else int(float(text))
        if kind is int and float(text) != int(float(text)):
            raise ValueError
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise TraceError(f"{path}:{line}: column {column}: {text!r} is not {what}") from None
    if value < 0:
        raise TraceError(f"{path}:{line}: column {column}: {text!r} must not be negative")
    return value


def read_trace(path: Path) -> Iterator[TraceJob]:
    """The jobs of a trace in file order; ``TraceError`` at the first bad row."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path}:1: the trace is empty; it needs a header row")
        names = [h.strip().lstrip("#").strip() for h in header]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise TraceError(
                f"{path}:1: the header lacks column(s) {', '.join(missing)}; "
                f"required: {', '.join(REQUIRED)}"
            )
        at = {name: names.index(name) for name in (*REQUIRED, *OPTIONAL) if name in names}
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise TraceError(
                    f"{path}:{line}: {len(row)} columns where the header has {len(names)}"
                )

            def cell(name: str, row: list[str] = row) -> str | None:
                i = at.get(name)
                return row[i].strip() or None if i is not None else None

            job_id = cell("job_id")
            if not job_id:
                raise TraceError(f"{path}:{line}: column job_id: the job has no id")
            yield TraceJob(
                job_id=job_id,
                submit_time_s=_number(path, line, "submit_time_s", row[at["submit_time_s"]], float),
                num_gpus=int(_number(path, line, "num_gpus", row[at["num_gpus"]], int)),
                duration_s=_number(path, line, "duration_s", row[at["duration_s"]], float),
                gpu_type=cell("gpu_type"),
                user=cell("user"),
                vc=cell("vc"),
                status=cell("status"),
            )


def load_trace(path: Path) -> list[TraceJob]:
    """All jobs of a trace, sorted by submission time (stable for equal times)."""
    return sorted(read_trace(path), key=lambda j: j.submit_time_s)
