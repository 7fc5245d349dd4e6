"""The store on SQLite and PostgreSQL: migrations, transitions, idempotency, usage, leases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from grappe.domain.jobs import JobState
from grappe.domain.projects import Role
from grappe.store import job_repo, project_repo
from grappe.store.db import Store
from grappe.store.tables import JobRow


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def _job(s, project_id: int, owner_id: int, request_id: str | None = None) -> JobRow:
    now = datetime.now(UTC)
    row = JobRow(
        name="j",
        project_id=project_id,
        owner_id=owner_id,
        client_request_id=request_id,
        spec={"name": "j", "run": "true"},
        state="PENDING",
        reason="queued",
        gpus=1,
        cpus=2,
        memory_bytes=0,
        max_runtime_s=60,
        submitted_at=now,
        updated_at=now,
    )
    return job_repo.add_job(s, row, "queued")


def test_migrations_create_every_table_and_are_repeatable(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "jobs",
        "job_events",
        "projects",
        "allocations",
        "usage",
        "users",
        "tokens",
        "audit",
        "leases",
        "alembic_version",
    } <= tables
    store.migrate()  # a restart applies nothing twice
    assert set(inspect(store.engine).get_table_names()) == tables


def test_every_transition_is_kept_with_time_and_reason(store: Store) -> None:
    with store.session() as s:
        user = project_repo.add_user(s, "ada", Role.MEMBER)
        project = project_repo.add_project(s, "p1")
        job = _job(s, project.id, user.id)
    t1 = datetime.now(UTC)
    with store.session() as s:
        assert job_repo.move_job(
            s, job.id, [JobState.PENDING], JobState.SUBMITTED, "to site a", t1, site="a"
        )
        # a stale actor that still believes the job pending loses the race
        assert not job_repo.move_job(s, job.id, [JobState.PENDING], JobState.CANCELLED, "late", t1)
        assert job_repo.move_job(s, job.id, [JobState.SUBMITTED], JobState.RUNNING, "running", t1)
    with store.session() as s:
        events = job_repo.job_events(s, job.id)
        row = job_repo.job_row(s, job.id)
    assert [e.state for e in events] == [JobState.PENDING, JobState.SUBMITTED, JobState.RUNNING]
    assert [e.reason for e in events] == ["queued", "to site a", "running"]
    assert events[1].site == "a"
    assert events[1].at.tzinfo is not None and abs((events[1].at - t1).total_seconds()) < 1
    assert row is not None and row.state == "RUNNING"


def test_one_request_id_per_member_is_one_job(store: Store) -> None:
    with store.session() as s:
        user = project_repo.add_user(s, "bob", Role.MEMBER)
        project = project_repo.add_project(s, "p2")
        first = _job(s, project.id, user.id, "req-1")
    with pytest.raises(IntegrityError):
        with store.session() as s:
            _job(s, project.id, user.id, "req-1")
    with store.session() as s:
        assert job_repo.job_by_request_id(s, user.id, "req-1").id == first.id  # type: ignore[union-attr]


def test_usage_is_charged_once_per_attempt_and_balances(store: Store) -> None:
    now = datetime.now(UTC)
    with store.session() as s:
        user = project_repo.add_user(s, "cy", Role.MEMBER)
        project = project_repo.add_project(s, "p3")
        project_repo.add_allocation(
            s, project.id, 10.0, 20.0, now - timedelta(days=1), now + timedelta(days=1)
        )
        job = _job(s, project.id, user.id)
        assert project_repo.add_usage(s, project.id, job.id, 1, "a", 2.5, 5.0, 10.0, 0.1, now)
        assert not project_repo.add_usage(s, project.id, job.id, 1, "a", 2.5, 5.0, 10.0, 0.1, now)
        assert project_repo.add_usage(s, project.id, job.id, 2, "b", 1.0, 1.0, 1.0, 0.0, now)
    with store.session() as s:
        bal = project_repo.balance(s, project.id, now)
    assert bal.usage.gpu_hours == pytest.approx(3.5)
    assert bal.gpu_hours_left == pytest.approx(6.5)
    assert bal.usage.jobs == 1
    assert bal.refusal("p3", 1, now) is None


def test_only_one_replica_holds_the_scheduler_lease(store: Store) -> None:
    now = datetime.now(UTC)
    with store.session() as s:
        assert job_repo.take_lease(s, "scheduler", "replica-a", now, 10)
    with store.session() as s:
        assert not job_repo.take_lease(s, "scheduler", "replica-b", now, 10)
    with store.session() as s:
        assert job_repo.take_lease(s, "scheduler", "replica-a", now, 10)  # renewal
    with store.session() as s:
        assert job_repo.take_lease(s, "scheduler", "replica-b", now + timedelta(seconds=11), 10)
