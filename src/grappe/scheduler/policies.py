"""Queue policies: in which order pending jobs are considered, and whether later jobs may pass.

A policy is named and pluggable (``GRAPPE_POLICY``); baselines live beside the
real one so that benchmarks compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class QueuedJob:
    """A pending job with what ordering needs to know about its project."""

    job_id: int
    submitted_at: datetime
    project: str
    project_priority: int
    share_used: float  # fraction of the project's allocation used (fair share)


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def backfill(self) -> bool:
        """May a later job start while an earlier one waits? Without it the queue is strict."""
        ...

    def order(self, jobs: Sequence[QueuedJob]) -> list[QueuedJob]: ...


@dataclass(frozen=True)
class Fifo:
    """Strict arrival order: the first job that cannot start blocks the rest."""

    name: str = "fifo"
    backfill: bool = False

    def order(self, jobs: Sequence[QueuedJob]) -> list[QueuedJob]:
        return sorted(jobs, key=lambda j: (j.submitted_at, j.job_id))


@dataclass(frozen=True)
class FairShare:
    """Grappe's policy: project priority, then fair share, then age; later jobs may pass.

    Fair share puts first the projects that have used the smallest part of their
    allocation (in steps of 5%, so that age still orders near-equal projects).
    A job that waits keeps the free capacity of the pool it waits for, so
    smaller jobs passing it cannot starve it.
    """

    name: str = "grappe"
    backfill: bool = True
    share_step: float = 0.05

    def order(self, jobs: Sequence[QueuedJob]) -> list[QueuedJob]:
        def key(j: QueuedJob) -> tuple[int, float, datetime, int]:
            share = j.share_used if j.share_used != float("inf") else 1e9
            return (-j.project_priority, int(share / self.share_step), j.submitted_at, j.job_id)

        return sorted(jobs, key=key)


POLICIES: dict[str, Policy] = {"grappe": FairShare(), "fifo": Fifo()}


def policy(name: str) -> Policy:
    """The policy called ``name``; ``ValueError`` names the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(
            f"policy {name!r} is not known; use one of {', '.join(POLICIES)}"
        ) from None
