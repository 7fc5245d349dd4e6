"""Jobs and their state machine.

A job is ``PENDING`` in Grappe's global queue until the scheduler releases it
to a site (``SUBMITTED``); the site's engine starts it (``RUNNING``) and it ends
in one terminal state. A job whose site failed may go back to ``PENDING`` to
be placed again, within its retry budget. Every transition is recorded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from grappe.domain.datasets import DataNeed
from grappe.domain.quantum import QuantumNeed
from grappe.domain.resources import Resources


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def active(self) -> bool:
        """Handed to a site and not finished: the site holds resources for it."""
        return self in (JobState.SUBMITTED, JobState.RUNNING)


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.SUBMITTED, JobState.CANCELLED, JobState.FAILED}),
    JobState.SUBMITTED: frozenset(
        {
            JobState.RUNNING,
            JobState.PENDING,  # the site refused or vanished before start: place again
            *TERMINAL_STATES,
        }
    ),
    JobState.RUNNING: frozenset({JobState.PENDING, *TERMINAL_STATES}),
}


class InvalidTransition(Exception):
    """A state change that the job's life does not allow (a bug, or a race lost)."""


def check_transition(current: JobState, new: JobState) -> None:
    """Raise ``InvalidTransition`` unless ``current -> new`` is allowed."""
    if new not in _ALLOWED.get(current, frozenset()):
        raise InvalidTransition(f"a job cannot go from {current} to {new}")


@dataclass(frozen=True)
class JobRequest:
    """What placement needs to know about a job: a pure value, no I/O."""

    id: str
    project: str
    resources: Resources
    max_runtime_s: int
    objective: str = "time"
    jurisdiction: str | None = None
    certifications: tuple[str, ...] = ()
    sites_allow: tuple[str, ...] = ()
    sites_deny: tuple[str, ...] = ()
    max_price_eur_gpu_hour: float | None = None
    # Sites where the submitting member has registered their own account.
    site_accounts: frozenset[str] = frozenset()
    # Datasets the job reads (``inputs``), with what placement must respect for each.
    inputs: tuple[DataNeed, ...] = ()
    quantum: QuantumNeed | None = None  # a quantum task: what it needs of a device
    # The job checkpoints and may be stopped to let a more urgent job run, then resumed.
    preemptible: bool = False


@dataclass
class Transition:
    """One recorded state change of a job."""

    state: JobState
    at: datetime
    reason: str = ""
    site: str | None = None


@dataclass
class Job:
    """A job as the scheduler and services see it."""

    id: str
    name: str
    project: str
    owner: str
    spec: dict[str, Any]  # the validated JobSpec as plain data, as the user sent it
    request: JobRequest
    state: JobState
    submitted_at: datetime
    reason: str = ""
    site: str | None = None
    pool: str | None = None
    handle: str | None = None
    attempt: int = 0
    retries: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    placement: dict[str, Any] | None = None  # the last placement explanation
    history: list[Transition] = field(default_factory=list)
