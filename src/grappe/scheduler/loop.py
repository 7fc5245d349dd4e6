"""The scheduler loop: reconcile what sites hold, then release pending jobs where they can start.

Each pass (``Scheduler.tick``) does two things, in a short transaction each:

1. *Reconcile*: ask every site about the jobs handed to it, record each change
   of state, charge usage on the way out, and retry failed attempts within the
   job's budget. A job left mid-submission by a crash is found again
   (``Backend.find``) or submitted again under the same attempt number, so it
   never runs twice.
2. *Schedule*: walk the pending jobs in policy order, place each against live
   snapshots, and release it to its best site only when that site can start it
   now (late binding). A job that must wait keeps the capacity it waits for.

Time comes from an injected clock, so a simulator can drive this same code.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from grappe.backends import Launch, SiteAccount, SiteUnavailable, Status, SubmitRejected
from grappe.data.inputs import launch_inputs, needs_by_job
from grappe.domain.accounting import charge
from grappe.domain.jobs import JobState
from grappe.domain.projects import Balance
from grappe.domain.resources import format_duration
from grappe.placement import Candidate, Placement
from grappe.quantum.ledger import record_attempt, shots_charged
from grappe.runtime import Factory
from grappe.scheduler.decide import Entry, decide
from grappe.scheduler.lookups import PoolMemo
from grappe.scheduler.policies import Policy, QueuedJob
from grappe.scheduler.window import MAX_PENDING_PER_PASS, MAX_PENDING_READ, window
from grappe.store import job_repo, project_repo
from grappe.store.tables import JobRow

log = logging.getLogger("grappe.scheduler")

ACTIVE = (JobState.SUBMITTED, JobState.RUNNING)
LEASE = "scheduler"


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class TickReport:
    """What one pass did, for logs, tests and benchmarks."""

    led: bool = True
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    waiting: int = 0
    held: int = 0


# ------------------------------------------------------------------ reconcile


def _finish(factory: Factory, row: JobRow, status: Status, now: datetime) -> bool:
    """Record an attempt's end: charge it, then end the job or queue it again for a retry."""
    site = factory.sites.get(row.site or "")
    ended = status.ended_at or now
    started = row.started_at or status.started_at
    retries_allowed = int(row.spec.get("retries", 0))
    retry = (
        status.state == JobState.FAILED
        and row.retries < retries_allowed
        and not row.cancel_requested
    )
    with factory.store.session() as s:
        if site is not None and row.pool and started is not None:
            pool = site.pool(row.pool)
            if pool is not None:
                projects, _ = project_repo.names_by_id(s, [row.project_id], [])
                job = job_repo.to_job(row, projects[row.project_id], "")
                cost = charge(
                    job.request.resources,
                    site,
                    pool,
                    (ended - started).total_seconds(),
                    factory.gpus.get(pool.gpu_model or ""),
                    shots_charged(job, status),
                )
                project_repo.add_usage(
                    s,
                    row.project_id,
                    row.id,
                    row.attempt,
                    site.name,
                    cost.gpu_hours,
                    cost.cpu_hours,
                    cost.eur,
                    cost.kg_co2,
                    ended,
                )
                if job.request.quantum is not None:
                    record_attempt(s, factory.backends.get(site.name), row, cost, ended)
        if retry:
            reason = (
                f"attempt {row.attempt} on {row.site} failed ({status.reason}); "
                f"placing again (retry {row.retries + 1} of {retries_allowed})"
            )
            return job_repo.move_job(
                s,
                row.id,
                ACTIVE,
                JobState.PENDING,
                reason,
                now,
                retries=row.retries + 1,
                site=None,
                pool=None,
                handle=None,
                exit_code=status.exit_code,
            )
        state = status.state
        reason = status.reason or (
            f"exit code {status.exit_code}" if status.exit_code is not None else str(state).lower()
        )
        if row.cancel_requested and state != JobState.SUCCEEDED:
            state, reason = JobState.CANCELLED, row.cancel_reason or "cancelled"
        return job_repo.move_job(
            s,
            row.id,
            ACTIVE,
            state,
            reason,
            now,
            ended_at=ended,
            exit_code=status.exit_code,
            started_at=started,
        )


def _apply(factory: Factory, row: JobRow, status: Status, now: datetime) -> bool:
    """Bring one stored job in line with what its site says; ``True`` if it ended."""
    current = JobState(row.state)
    if status.state.terminal:
        return _finish(factory, row, status, now) and True
    if status.state == JobState.RUNNING and current == JobState.SUBMITTED:
        with factory.store.session() as s:
            job_repo.move_job(
                s,
                row.id,
                [JobState.SUBMITTED],
                JobState.RUNNING,
                f"running on {row.site}/{row.pool}",
                now,
                started_at=status.started_at or now,
            )
    if row.cancel_requested and row.handle:
        # A cancel recorded before a crash, or while the site was away: send it again.
        try:
            factory.backends[row.site or ""].cancel(row.handle)
        except SiteUnavailable:
            pass
    return False


def _launch(factory: Factory, row: JobRow) -> Launch:
    spec = row.spec
    archive = None
    if row.workdir_upload:
        archive = Path(factory.settings.uploads_dir) / f"{row.workdir_upload}.tar.gz"
    with factory.store.session() as s:
        projects, users = project_repo.names_by_id(s, [row.project_id], [row.owner_id])
        job = job_repo.to_job(row, projects[row.project_id], users[row.owner_id])
        account = project_repo.site_account(s, row.owner_id, row.site or "")
    return Launch(
        job_id=str(row.id),
        attempt=row.attempt,
        name=row.name,
        project=projects[row.project_id],
        pool=row.pool or "",
        resources=job.request.resources,
        run=spec["run"],
        max_runtime_s=row.max_runtime_s,
        setup=spec.get("setup"),
        env=dict(spec.get("env") or {}),
        workdir_archive=archive,
        owner=job.owner,
        account=SiteAccount(
            account.remote_user, Path(account.key_path) if account.key_path else None
        )
        if account
        else None,
        inputs=launch_inputs(factory, row, job.owner),
        quantum=spec.get("quantum"),
    )


def _not_taken_yet(factory: Factory, job_id: int, site: str, exc: Exception) -> None:
    """Say on the job why its site has not taken it (a full disk, an engine away)."""
    with factory.store.session() as s:
        reason = f"released to {site}, which has not taken it yet: {exc}; tried again"
        job_repo.set_job_fields(s, job_id, reason=reason[:500])


def _recover(factory: Factory, row: JobRow, now: datetime) -> None:
    """A job marked SUBMITTED whose handle was never stored: find it at its site, or submit it."""
    backend = factory.backends.get(row.site or "")
    if backend is None:
        return
    handle = backend.find(str(row.id), row.attempt)
    if handle is None and row.cancel_requested:
        with factory.store.session() as s:
            reason = row.cancel_reason or "cancelled"
            job_repo.move_job(s, row.id, ACTIVE, JobState.CANCELLED, reason, now, ended_at=now)
        return
    if handle is None:
        try:
            handle = backend.submit(_launch(factory, row))
        except SubmitRejected as exc:
            _finish(
                factory, row, Status(JobState.FAILED, f"{row.site} refused the job: {exc}"), now
            )
            return
    with factory.store.session() as s:
        job_repo.set_job_fields(s, row.id, handle=handle)


def reconcile(factory: Factory, clock: Clock, report: TickReport, only: int | None = None) -> None:
    """Poll every site about its active jobs and record what changed."""
    with factory.store.session() as s:
        rows = job_repo.jobs_in_states(s, ACTIVE)
    if only is not None:
        rows = [r for r in rows if r.id == only]
    by_site: dict[str, list[JobRow]] = {}
    for row in rows:
        if row.handle is None:
            try:
                _recover(factory, row, clock.now())
            except SiteUnavailable as exc:
                log.warning(
                    "site %s unavailable while recovering job %s: %s", row.site, row.id, exc
                )
                _not_taken_yet(factory, row.id, row.site or "", exc)
            continue
        by_site.setdefault(row.site or "", []).append(row)
    for site, site_rows in by_site.items():
        backend = factory.backends.get(site)
        if backend is None:
            log.error(
                "jobs %s are on site %s, which factory.yaml no longer declares",
                [r.id for r in site_rows],
                site,
            )
            continue
        try:
            statuses = backend.poll([r.handle for r in site_rows if r.handle])
        except SiteUnavailable as exc:
            log.warning("site %s unavailable: %s; its jobs stay as they are", site, exc)
            _site_silent(factory, site, site_rows, str(exc), clock.now())
            continue
        _site_back(factory, site)
        for row in site_rows:
            status = statuses.get(row.handle or "")
            if status is not None and _apply(factory, row, status, clock.now()):
                report.finished.append(row.id)
    if only is None:
        for site in factory.sites:
            if site not in by_site:
                _site_back(factory, site, probe=True)


def _site_silent(
    factory: Factory, site: str, rows: list[JobRow], error: str, now: datetime
) -> None:
    """Note the outage; past the limit, jobs not started there go back to the queue."""
    with factory.store.session() as s:
        since = job_repo.mark_outage(s, site, now, error)
    silent_s = (now - since).total_seconds()
    if silent_s < factory.settings.site_down_requeue_s:
        return
    for row in rows:
        if row.state != str(JobState.SUBMITTED):
            continue  # a running job is the site's to finish; it is reconciled when it answers
        reason = (
            f"site {site} has not answered for {format_duration(silent_s)} ({error}); "
            "placing again elsewhere"
        )
        with factory.store.session() as s:
            if job_repo.move_job(
                s,
                row.id,
                [JobState.SUBMITTED],
                JobState.PENDING,
                reason,
                now,
                site=None,
                pool=None,
                handle=None,
            ):
                job_repo.add_abandoned(s, site, row.id, row.attempt, row.handle, now)


def _site_back(factory: Factory, site: str, probe: bool = False) -> None:
    """A site answers again: cancel there what was given up while it was silent."""
    with factory.store.session() as s:
        pending = job_repo.abandoned_at(s, site)
        outage = job_repo.has_outage(s, site)
    if not pending and not outage:
        return
    backend = factory.backends[site]
    if probe and not backend.capacity().available:
        return
    for row in pending:
        try:
            handle = row.handle or backend.find(str(row.job_id), row.attempt)
            if handle:
                backend.cancel(handle)
        except SiteUnavailable:
            return
        log.info("cancelled abandoned attempt %s of job %s on %s", row.attempt, row.job_id, site)
        with factory.store.session() as s:
            job_repo.drop_abandoned(s, row.id)
    with factory.store.session() as s:
        job_repo.clear_outage(s, site)


def reconcile_job(factory: Factory, job_id: int, clock: Clock | None = None) -> None:
    """Reconcile one job now (after a cancel, so the user sees its end at once)."""
    reconcile(factory, clock or WallClock(), TickReport(), only=job_id)


# ------------------------------------------------------------------ schedule


def _dispatch(factory: Factory, row: JobRow, cand: Candidate, now: datetime) -> bool:
    """Release a pending job to a site: record the intent, then submit, then store the handle."""
    attempt = row.attempt + 1
    with factory.store.session() as s:
        moved = job_repo.move_job(
            s,
            row.id,
            [JobState.PENDING],
            JobState.SUBMITTED,
            f"released to {cand.site}/{cand.pool}",
            now,
            site=cand.site,
            pool=cand.pool,
            attempt=attempt,
            handle=None,
        )
        if not moved:
            return False  # cancelled meanwhile
    row.site, row.pool, row.attempt, row.state = cand.site, cand.pool, attempt, "SUBMITTED"
    backend = factory.backends[cand.site]
    try:
        handle = backend.submit(_launch(factory, row))
    except SubmitRejected as exc:
        _finish(factory, row, Status(JobState.FAILED, f"{cand.site} refused the job: {exc}"), now)
        return False
    except SiteUnavailable as exc:
        # The site may or may not hold it: reconcile asks again (find, then submit).
        log.warning("site %s unavailable while submitting job %s: %s", cand.site, row.id, exc)
        _not_taken_yet(factory, row.id, cand.site, exc)
        return True
    with factory.store.session() as s:
        job_repo.set_job_fields(s, row.id, handle=handle)
    return True


class Scheduler:
    """Runs reconcile and schedule passes; one replica at a time holds the lease."""

    def __init__(
        self,
        factory: Factory,
        policy: Policy,
        clock: Clock | None = None,
        holder: str | None = None,
        max_pending: int = MAX_PENDING_PER_PASS,
    ) -> None:
        self.factory = factory
        self.policy = policy
        self.max_pending = max_pending
        self.clock = clock or WallClock()
        # A replica restarted under the same name takes its lease back at once.
        self.holder = holder or uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def tick(self) -> TickReport:
        report = TickReport()
        now = self.clock.now()
        ttl = max(10.0, 5 * self.factory.settings.scheduler_interval_s)
        with self.factory.store.session() as s:
            report.led = job_repo.take_lease(s, LEASE, self.holder, now, ttl)
        if not report.led:
            return report
        reconcile(self.factory, self.clock, report)
        self.schedule(report)
        return report

    def schedule(self, report: TickReport) -> None:
        factory = self.factory
        now = self.clock.now()
        with factory.store.session() as s:
            rows = [
                r
                for r in job_repo.jobs_in_states(s, [JobState.PENDING], limit=MAX_PENDING_READ)
                if not r.cancel_requested
            ]
            if not rows:
                return
            projects = {p.id: p for p in project_repo.list_projects(s)}
            accounts = project_repo.site_accounts_of(s, {r.owner_id for r in rows})
            data = needs_by_job(s, rows, {p.id: p.name for p in projects.values()})
            balances: dict[int, Balance] = {
                pid: project_repo.balance(s, pid, now) for pid in {r.project_id for r in rows}
            }
        by_id = {r.id: r for r in rows}
        entries = []
        for r in rows:
            project = projects[r.project_id]
            request = replace(
                job_repo.to_job(r, project.name, "").request,
                site_accounts=frozenset(accounts.get(r.owner_id, ())),
                inputs=data.get(r.id, ()),
            )
            queued = QueuedJob(
                r.id,
                r.submitted_at,
                project.name,
                project.priority,
                balances[r.project_id].share_used,
            )
            held = balances[r.project_id].refusal(project.name, request.resources.gpus, now)
            entries.append(Entry(queued, request, held))

        def start(entry: Entry, best: Candidate, placement: Placement) -> bool:
            row = by_id[entry.queued.job_id]
            if not _dispatch(factory, row, best, now):
                return False
            with factory.store.session() as s:
                job_repo.set_job_fields(s, row.id, placement=placement.as_dict())
            return True

        snapshots = {snap.site.name: snap for snap in factory.snapshots()}
        memo = PoolMemo()
        seen = window(entries, self.policy, snapshots, self.max_pending, memo=memo)
        done = decide(seen, snapshots, self.policy, factory.gpus, start, memo=memo)
        report.started.extend(entry.queued.job_id for entry, _, _ in done.started)
        report.held += done.held
        report.waiting += len(done.waiting) - done.held
        for entry, reason, placement in done.waiting:
            self._note(
                by_id[entry.queued.job_id], reason, placement.as_dict() if placement else None
            )

    def _note(self, row: JobRow, reason: str, placement: dict[str, Any] | None) -> None:
        """Store why a pending job waits, only when that changed (few writes per pass)."""
        if row.reason == reason:
            return
        fields: dict[str, Any] = {"reason": reason}
        if placement is not None:
            fields["placement"] = placement
        with self.factory.store.session() as s:
            job_repo.set_job_fields(s, row.id, **fields)

    # -------------------------------------------------------------- background thread

    def wake(self) -> None:
        """Run the next pass now (after a submission) instead of at the next interval."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="grappe-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.factory.settings.scheduler_interval_s
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad pass must not stop the factory; the next one retries
                log.exception("scheduler pass failed")
            self._wake.wait(interval)
            self._wake.clear()
