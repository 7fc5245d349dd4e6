"""The scheduling pass as a pure function: order, holds, strictness, reservations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot
from grappe.scheduler.decide import Entry, _slack, decide
from grappe.scheduler.policies import QueuedJob, policy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def site(name: str, free_cpus: int, total: int = 4) -> SiteSnapshot:
    pool = Pool("p", nodes=1, cpus_per_node=total, memory_bytes_per_node=8 << 30)
    return SiteSnapshot(
        Site(name, "op", "FR", "EU", (), 50.0, "local", (pool,)),
        (PoolCapacity("p", 0, free_cpus, 8 << 30, running_cpu_seconds_left=600.0),),
    )


def entry(job_id: int, cpus: int, allow: tuple[str, ...] = (), held: str | None = None) -> Entry:
    q = QueuedJob(job_id, T0 + timedelta(seconds=job_id), "demo", 0, 0.0)
    return Entry(
        q, JobRequest(str(job_id), "demo", Resources(cpus=cpus), 600, sites_allow=allow), held
    )


def run(
    entries: list[Entry], snaps: list[SiteSnapshot], name: str, refuse: frozenset[int] = frozenset()
):
    started: list[tuple[int, str]] = []

    def start(e: Entry, c, p) -> bool:  # type: ignore[no-untyped-def]
        if e.queued.job_id in refuse:
            return False
        started.append((e.queued.job_id, c.site))
        return True

    result = decide(entries, {s.site.name: s for s in snaps}, policy(name), gpu_models(), start)
    return started, result


def test_fifo_stops_at_the_first_job_that_must_wait() -> None:
    jobs = [entry(1, 4, allow=("a",)), entry(2, 1)]
    started, result = run(jobs, [site("a", 2), site("b", 4)], "fifo")
    assert started == []
    assert [e.queued.job_id for e, _, _ in result.waiting] == [1]
    assert "waiting for 4 CPUs on a/p" in result.waiting[0][1]


def test_grappe_lets_others_pass_but_keeps_the_waiting_jobs_pool() -> None:
    jobs = [entry(1, 4, allow=("a",)), entry(2, 2, allow=("a",)), entry(3, 1)]
    started, result = run(jobs, [site("a", 2), site("b", 4)], "grappe")
    # job 2 would fit on a, but a's free CPUs are kept for job 1; job 3 goes to b
    assert started == [(3, "b")]
    assert {e.queued.job_id for e, _, _ in result.waiting} == {1, 2}


def test_held_jobs_wait_with_their_reason_and_block_nobody() -> None:
    jobs = [entry(1, 1, held="project 'demo' has used 10 of its 10 GPU-hours"), entry(2, 1)]
    started, result = run(jobs, [site("a", 4)], "fifo")
    assert started == [(2, "a")]
    assert result.held == 1 and result.waiting[0][1].startswith("held: project 'demo'")


def test_capacity_a_site_refused_stays_free_for_the_next_job() -> None:
    jobs = [entry(1, 4), entry(2, 4)]
    started, _ = run(jobs, [site("a", 4)], "grappe", refuse=frozenset({1}))
    assert started == [(2, "a")]


def test_started_jobs_take_capacity_within_the_pass() -> None:
    jobs = [entry(1, 3), entry(2, 3), entry(3, 1)]
    started, result = run(jobs, [site("a", 4)], "grappe")
    # job 2 waits and keeps the one CPU left, so job 3 cannot take it
    assert started == [(1, "a")]
    assert {e.queued.job_id for e, _, _ in result.waiting} == {2, 3}


def test_slack_is_whether_every_pool_holds_all_entries_cpus_and_memory() -> None:
    jobs = [entry(1, 2), entry(2, 1)]  # 3 CPUs in all
    assert _slack(jobs, {s.site.name: s for s in (site("a", 3), site("b", 4))})
    assert not _slack(jobs, {s.site.name: s for s in (site("a", 2), site("b", 4))})
    assert _slack([], {"a": site("a", 0)})
    assert not _slack([], {"a": site("a", -1)})  # an overcommitted pool has no slack
    big = replace(
        jobs[0], request=replace(jobs[0].request, resources=Resources(cpus=1, memory_bytes=9 << 30))
    )
    assert not _slack([big], {"a": site("a", 4)})  # 8 GiB free
