"""The backend protocol: how Grappe drives one site's engine.

A backend runs what the scheduler releases to its site and reports what the
site holds. It never decides placement; the scheduler never shells out.
Every verb may raise ``SiteUnavailable`` when the site does not answer; the
scheduler then keeps the site's jobs as they are and asks again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from grappe.domain.datasets import DataInput
from grappe.domain.jobs import JobState
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, Site, SiteSnapshot


class SiteUnavailable(Exception):
    """The site's engine did not answer; nothing is known to have changed there."""


class SubmitRejected(Exception):
    """The site's engine refused the job; the message is the engine's own, for the user."""


@dataclass(frozen=True)
class SiteAccount:
    """An account on a site: who Grappe acts as there, and the key it proves it with.

    ``key_path`` is a private SSH key; ``None`` for local access, where commands
    run as the user running Grappe.
    """

    user: str
    key_path: Path | None = None


@dataclass(frozen=True)
class Launch:
    """Everything a backend needs to start one attempt of a job.

    ``(job_id, attempt)`` identifies the attempt: submitting the same pair twice
    must not start it twice, so a control plane that died mid-submit can retry.
    """

    job_id: str
    attempt: int
    name: str
    project: str
    pool: str
    resources: Resources
    run: str
    max_runtime_s: int
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir_archive: Path | None = None  # a .tar.gz unpacked into the job's directory
    owner: str = ""  # the Grappe member who submitted it
    # The member's own account on the site, when they registered one; otherwise the
    # backend uses the site's service account if the operator allows it.
    account: SiteAccount | None = None
    # Dataset versions staged into the job's directory, checksums verified, before it starts.
    inputs: tuple[DataInput, ...] = ()
    # A quantum task: the spec's ``quantum`` section (program, format, shots), else ``None``.
    quantum: dict[str, Any] | None = None


@dataclass(frozen=True)
class Status:
    """What the engine says of one submitted attempt."""

    state: JobState
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def single_node_pool(site: Site, launch: Launch, nodes_hint: str) -> Pool:
    """The launch's pool, checked to hold the job on one node; ``SubmitRejected`` says why not.

    For engines that run a job's command on one node (the local runner, a Ray entrypoint);
    ``nodes_hint`` tells the user what to do instead of asking for several nodes.
    """
    pool = site.pool(launch.pool)
    if pool is None:
        names = ", ".join(p.name for p in site.pools)
        raise SubmitRejected(f"site {site.name} has no pool {launch.pool!r} ({names})")
    r, problems = launch.resources, []
    if r.nodes > 1:
        problems.append(f"{r.nodes} nodes ({nodes_hint})")
    if r.gpus > pool.gpus_per_node:
        problems.append(f"{r.gpus} GPUs ({pool.gpus_per_node} per node)")
    if r.gpus and (r.gpu_model or "").lower() not in ("", (pool.gpu_model or "").lower()):
        problems.append(f"{r.gpu_model} GPUs (it has {pool.gpu_model})")
    if r.cpus > pool.cpus_per_node:
        problems.append(f"{r.cpus} CPUs ({pool.cpus_per_node} per node)")
    if r.memory_bytes > pool.memory_bytes_per_node:
        problems.append(f"{r.memory_bytes} bytes of memory ({pool.memory_bytes_per_node})")
    if problems:
        raise SubmitRejected(f"pool {pool.name} cannot fit the job: {'; '.join(problems)}")
    return pool


@runtime_checkable
class Backend(Protocol):
    site: Site

    def capacity(self) -> SiteSnapshot:
        """Free and total capacity per pool now, and the work queued there.

        Returns a snapshot with ``available=False`` (and the error) when the
        site does not answer, rather than raising.
        """
        ...

    def submit(self, launch: Launch) -> str:
        """Start an attempt and return its handle (the engine's job id).

        Idempotent on ``(launch.job_id, launch.attempt)``. Raises
        ``SubmitRejected`` when the engine refuses it.
        """
        ...

    def find(self, job_id: str, attempt: int) -> str | None:
        """The handle of an attempt already submitted, or ``None``: recovery after a crash."""
        ...

    def poll(self, handles: Sequence[str]) -> dict[str, Status]:
        """The state of each handle. A handle the engine no longer knows is ``FAILED``."""
        ...

    def cancel(self, handle: str) -> None:
        """Stop the attempt and everything it started. Cancelling a finished one does nothing."""
        ...

    def logs(self, handle: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the attempt's output from ``offset``; ``b''`` when none yet."""
        ...

    def close(self) -> None:
        """Release what the backend holds (connections, threads). Jobs keep running."""
        ...
