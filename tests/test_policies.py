"""Scheduling policies on hand-made traces whose best schedules are known.

EASY backfill, LAS with preemption and Grappe's starvation bound, each through
the one scheduling pass (``decide``) that the live loop runs too.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot
from grappe.placement import place
from grappe.scheduler import decide as decide_module
from grappe.scheduler.decide import Entry, Running, decide
from grappe.scheduler.policies import POLICIES, Grappe, QueuedJob, las_queue, policy
from grappe.scheduler.predict import RuntimePredictor, shape
from grappe.scheduler.window import per_pool_window, per_pool_window_of_runs, window
from grappe.sim.metrics import summarise
from grappe.sim.replay import replay
from grappe.sim.trace import TraceJob
from tests.conftest import open_world

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def four_gpus() -> list[Site]:
    return [
        Site("s", "t", "FR", "EU", (), 50.0, "local", (Pool("p", 1, 64, 256 << 30, "A100", 4),))
    ]


def job(jid: str, at: float, gpus: int, duration: float, **kw: Any) -> TraceJob:
    return TraceJob(jid, at, gpus, duration, vc="x", **kw)


def starts(jobs: list[TraceJob], name: str) -> dict[str, float | None]:
    return {r.job_id: r.start_s for r in replay(jobs, four_gpus(), name).records}


def test_shadow_time_is_when_enough_gpus_come_back() -> None:
    cap = PoolCapacity("p", 1, 8, 1 << 30, as_of=10.0, releases=((20.0, 1), (30.0, 2), (30.0, 1)))
    assert cap.shadow(1) == (10.0, 0)  # fits now
    assert cap.shadow(2) == (20.0, 0)
    # Two jobs end at 30: both count, so two GPUs are spare for later jobs.
    assert cap.shadow(3) == (30.0, 2)
    assert cap.shadow(6) is None


def test_easy_backfill_lets_a_short_job_pass_without_delaying_the_head() -> None:
    # A holds 3 of 4 GPUs until 100; B needs 4 and waits for 100.
    # C (1 GPU, 50 s) ends before 100: it may pass. D (1 GPU, 500 s) would delay B: it waits.
    jobs = [job("A", 0, 3, 100), job("B", 1, 4, 10), job("C", 2, 1, 50), job("D", 3, 1, 500)]
    assert starts(jobs, "fifo") == {"A": 0, "B": 100, "C": 110, "D": 110}
    assert starts(jobs, "backfill") == {"A": 0, "B": 100, "C": 2, "D": 110}
    # Spare GPUs at the reservation may be used however long the job: B needs 2 of 4.
    jobs = [job("A", 0, 3, 100), job("B", 1, 2, 10), job("C", 2, 1, 500)]
    assert starts(jobs, "backfill") == {"A": 0, "B": 100, "C": 2}


def test_las_preempts_a_long_job_for_a_new_one_and_resumes_it() -> None:
    # A takes all 4 GPUs for 100,000 s; by 10,000 s it has had 40,000 GPU-s (the last
    # queue). B arrives then: LAS stops A, runs B at once, and A resumes where it stopped.
    jobs = [job("A", 0, 4, 100_000), job("B", 10_000, 1, 100)]
    result = replay(jobs, four_gpus(), "las")
    rec = {r.job_id: r for r in result.records}
    assert rec["B"].start_s == 10_000 and rec["B"].end_s == 10_100
    assert rec["A"].preemptions == 1 and rec["A"].end_s == pytest.approx(100_100)
    assert rec["A"].ran_s == pytest.approx(100_000)
    m = summarise(result)
    assert m["preemptions"] == 1 and m["violations"] == 0
    assert m["avg_wait_s"] == pytest.approx(100 / 2)  # A was stopped for B's 100 s
    # Without preemption B waits for A.
    assert starts(jobs, "fifo")["B"] == 100_000


def test_las_queues_by_attained_service() -> None:
    assert [las_queue(s) for s in (0, 3599, 3600, 35_999, 36_000, 1e9)] == [0, 0, 1, 1, 2, 2]


def test_grappe_serves_a_big_job_in_its_turn_among_many_small_ones() -> None:
    # One-GPU jobs of 100 s arrive every 25 s and keep the 4 GPUs busy; a 4-GPU job X
    # arrives at 500. LAS keeps passing X (a new job has received no service either, and
    # fits first); Grappe orders jobs of one LAS queue by age, not by size, so X reserves
    # the pool and starts when the jobs running at 500 s end.
    small = [job(f"s{i}", i * 25.0, 1, 100) for i in range(400)]
    jobs = [*small, job("X", 500, 4, 100)]
    grappe = replay(jobs, four_gpus(), "grappe")
    x = next(r for r in grappe.records if r.job_id == "X")
    assert x.start_s is not None and 500 < x.start_s <= 600
    assert grappe.violations == 0 and grappe.unfinished == 0
    las_x = starts(jobs, "las")["X"]
    assert las_x is not None and las_x > 9000  # starved until the stream ends


def test_decide_stops_the_highest_tier_first() -> None:
    pool = Pool("p", 1, 64, 256 << 30, "A100", 4)
    snap = SiteSnapshot(
        Site("s", "t", "FR", "EU", (), 50.0, "local", (pool,)),
        (PoolCapacity("p", 0, 60, 200 << 30),),
    )

    def request(i: int, gpus: int) -> JobRequest:
        return JobRequest(str(i), "x", Resources(gpus=gpus, cpus=1), 100, preemptible=True)

    def queued(i: int, gpus: int, service: float) -> QueuedJob:
        return QueuedJob(i, T0, "x", 0, 0.0, gpus, service)

    las = policy("las")
    running = sorted(
        (
            Running(queued(i, 2, service), request(i, 2), "s", "p", las.tier(queued(i, 2, service)))
            for i, service in ((1, 100.0), (2, 50_000.0))
        ),
        key=lambda r: r.tier,
    )
    stopped: list[int] = []
    started: list[int] = []
    new = Entry(queued(3, 2, 0.0), request(3, 2))
    result = decide(
        [new],
        {"s": snap},
        las,
        gpu_models(),
        lambda e, c, p: started.append(e.queued.job_id) is None,
        T0,
        running,
        lambda r: stopped.append(r.queued.job_id) is None,
    )
    assert stopped == [2] and started == [3]
    assert [r.queued.job_id for r in result.preempted] == [2]
    # A job of the same tier as every running one stops nobody.
    stopped.clear()
    result = decide(
        [Entry(queued(4, 2, 100_000.0), request(4, 2))],
        {"s": snap},
        las,
        gpu_models(),
        lambda e, c, p: True,
        T0,
        running,
        lambda r: stopped.append(r.queued.job_id) is None,
    )
    assert stopped == [] and not result.started


def test_a_job_stops_jobs_in_another_pool_when_its_best_pool_holds_none_it_may_stop() -> None:
    # Both pools are full. The H100 pool, the job's best, runs a job of the new job's own
    # tier; the A100 pool runs one of a later tier. The new job stops that one and starts
    # in the A100 pool rather than waiting for its best pool.
    fast = Pool("fast", 1, 64, 256 << 30, "H100", 2)
    slow = Pool("slow", 1, 64, 256 << 30, "A100", 2)
    site = Site("s", "t", "FR", "EU", (), 50.0, "local", (fast, slow))
    snap = SiteSnapshot(
        site,
        (PoolCapacity("fast", 0, 60, 200 << 30), PoolCapacity("slow", 0, 60, 200 << 30)),
    )

    def request(i: int) -> JobRequest:
        return JobRequest(str(i), "x", Resources(gpus=2, cpus=1), 100, preemptible=True)

    def queued(i: int, service: float) -> QueuedJob:
        return QueuedJob(i, T0, "x", 0, 0.0, 2, service)

    las = policy("las")
    running = [
        Running(queued(1, 0.0), request(1), "s", "fast", las.tier(queued(1, 0.0))),
        Running(queued(2, 50_000.0), request(2), "s", "slow", las.tier(queued(2, 50_000.0))),
    ]
    new = Entry(queued(3, 0.0), request(3))
    best = place(new.request, [snap], gpu_models()).best
    assert best is not None and best.pool == "fast"  # the premise: its best pool is "fast"
    stopped: list[int] = []
    where: list[str] = []
    result = decide(
        [new],
        {"s": snap},
        las,
        gpu_models(),
        lambda e, c, p: where.append(c.pool) is None,
        T0,
        running,
        lambda r: stopped.append(r.queued.job_id) is None,
    )
    assert stopped == [2] and where == ["slow"]
    assert [e.queued.job_id for e, _, _ in result.started] == [3]


def test_predictions_learn_by_user_then_shape() -> None:
    p = RuntimePredictor()
    assert p.predict("ann", "g", 1) == 0.0  # nothing learned: unknown
    for _ in range(3):
        p.observe("ann", "g", 1, 100.0)
        p.observe("bob", "g", 8, 10_000.0)
    assert p.predict("ann", "g", 1) == pytest.approx(100.0)
    assert p.predict("bob", "g", 8) == pytest.approx(10_000.0)
    # A new user is predicted from the group's jobs of the same shape.
    assert p.predict("cyd", "g", 8) == pytest.approx(10_000.0)
    fresh = RuntimePredictor()
    fresh.observe(None, None, 1, 100.0)
    fresh.observe(None, None, 8, 10_000.0)
    assert fresh.predict(None, None, 2) == pytest.approx(1000.0)  # geometric mean of all
    assert [shape(g) for g in (0, 1, 2, 3, 4, 8, 9)] == [0, 1, 2, 2, 3, 4, 4]


def test_aging_tells_light_tailed_runtimes_from_heavy_tailed_ones() -> None:
    light = RuntimePredictor()
    assert light.aging(1, 100.0) == 1.0  # nothing learned: neutral
    for k in range(100):
        light.observe("u", "g", 1, 1000.0 + 30.0 * k)  # uniform in 1,000 to 4,000 s
    # Run 2,000 s: about 1,000 s left, against about 2,500 s for a new job.
    assert 0.3 < light.aging(1, 2000.0) < 0.5
    assert light.aging(1, 5000.0) == math.inf  # it outran every job seen
    heavy = RuntimePredictor()
    for k in range(100):
        heavy.observe("u", "g", 1, 100_000.0 if k % 10 == 0 else 100.0)
    # Past 100 s only the long jobs remain: far more left than a new job's mean.
    assert heavy.aging(1, 1000.0) > 5
    # Another shape borrows every job's runtimes until 30 of its own have ended.
    assert heavy.aging(8, 1000.0) == pytest.approx(heavy.aging(1, 1000.0))


def test_grappe_shields_a_running_job_with_less_left_than_a_new_one() -> None:
    g = Grappe()
    job = QueuedJob(1, T0, "x", 0, 0.0, 1, 7200.0, 3600.0)
    assert not g.shielded(job, T0 + timedelta(hours=2))
    assert g.shielded(replace(job, aging=0.5), T0 + timedelta(hours=2))
    assert g.tier(job) == 1  # unshielded, it could be stopped by a job of tier 0


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_runs_the_shared_pass_live_and_replayed(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = decide_module.decide

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(decide_module, "decide", counting)
    from grappe.scheduler import loop as loop_module

    monkeypatch.setattr(loop_module, "decide", counting)
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", policy_name=name)
    try:
        spec = {"name": "t", "project": "demo", "run": "true", "max_runtime": "1m"}
        r = world.client().post("/api/v1/jobs", json=spec)
        assert r.status_code in (200, 201), r.text
        world.tick()
    finally:
        world.factory.close()
    assert calls == [name]
    result = replay([job("A", 0, 4, 100), job("B", 1, 2, 50)], four_gpus(), name)
    assert calls[1:] and set(calls) == {name}
    assert summarise(result)["jobs"] == 2


def test_cli_report_writes_markdown_and_plots(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from grappe.cli.main import app
    from tests.test_sim import federation, write_trace

    rows = [f"j{i},{i * 5},{1 + i % 4},{60 + 7 * i},{'ab'[i % 2]}" for i in range(40)]
    trace = write_trace(tmp_path / "t.csv", rows)
    out_dir = tmp_path / "report"
    args = ["sim", "--trace", str(trace), "--federation", str(federation(tmp_path))]
    policies = "grappe,fifo,backfill,las"
    out = CliRunner().invoke(app, [*args, "--policy", policies, "--report", str(out_dir)])
    assert out.exit_code == 0, out.output
    text = (out_dir / "report.md").read_text()
    for name in policies.split(","):
        assert f"| {name} | 40 |" in text
    assert "grappe average JCT is" in text and "![JCT CDF](jct_cdf.png)" in text
    for png in ("jct_cdf.png", "queue_utilisation.png"):
        data = (out_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # A report folder that cannot be made: a clear error, exit 2.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = CliRunner().invoke(app, [*args, "--report", str(blocker / "sub")])
    assert out.exit_code == 2 and "cannot make the report folder" in out.output


def test_a_job_says_it_is_preemptible_and_the_store_keeps_it(tmp_path: Path) -> None:
    from grappe.store import job_repo

    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    try:
        ids = []
        for flag in (True, False):
            spec = {"name": f"p{flag}", "project": "demo", "run": "true", "preemptible": flag}
            r = world.client().post("/api/v1/jobs", json=spec)
            assert r.status_code in (200, 201), r.text
            ids.append(r.json()["id"])
        with world.factory.store.session() as s:
            rows = [job_repo.job_row(s, int(i)) for i in ids]
            flags = [job_repo.to_job(row, "demo", "").request.preemptible for row in rows if row]
        assert flags == [True, False]
        bad = {"name": "b", "project": "demo", "run": "true", "preemptible": "sometimes"}
        r = world.client().post("/api/v1/jobs", json=bad)
        assert r.status_code == 422 and "preemptible" in r.text
    finally:
        world.factory.close()


def test_grappe_bounds_a_waits_slowdown_by_prediction_or_run_and_lets_a_starved_job_end() -> None:
    # Three 4-GPU jobs (100, 100 and 5,800 s) teach the predictor that 4-GPU jobs take
    # their geometric mean, 387 s. L (4 GPUs, 2,000 s) starts at 6,000 s and is stopped at
    # 7,000 s by the first of a stream of one-GPU jobs (100 s, every 25 s). It has run
    # 1,000 s, more than its prediction: it starves once it has waited 20 x 1,000 s, at
    # 27,000 s (not 20 x 387 s), starts first as the small jobs then running end, and no
    # new job stops it again.
    warm = [job("w0", 0, 4, 100), job("w1", 100, 4, 100), job("w2", 200, 4, 5_800)]
    small = [job(f"s{i}", 7_000 + i * 25.0, 1, 100) for i in range(1_800)]
    jobs = [*warm, job("L", 6_000, 4, 2_000), *small]
    long = {r.job_id: r for r in replay(jobs, four_gpus(), "grappe").records}["L"]
    assert long.preemptions == 1
    assert long.ran_s == pytest.approx(2_000)
    assert long.end_s is not None and 28_000 < long.end_s <= 28_000 + 100
    # LAS keeps stopping it for each new small job: it ends after the stream (52,000 s).
    las = {r.job_id: r for r in replay(jobs, four_gpus(), "las").records}
    assert las["L"].end_s is not None and las["L"].end_s > 52_000
    # Mispredicted by far (100 s, runs 20,000 s), a job stopped after 9,600 s may wait
    # 192,000 s before it starves: it does not take back the GPUs from the stream of
    # short jobs, and ends after it, as under LAS.
    warm = [job(f"w{i}", i * 100.0, 4, 100) for i in range(3)]
    small = [job(f"s{i}", 10_000 + i * 25.0, 1, 100) for i in range(600)]
    jobs = [*warm, job("L", 400, 4, 20_000), *small]
    long = {r.job_id: r for r in replay(jobs, four_gpus(), "grappe").records}["L"]
    assert long.preemptions == 1
    assert long.end_s is not None and long.end_s > 10_000 + 600 * 25


def test_grappe_counts_as_waiting_only_the_time_a_job_did_not_run() -> None:
    grappe = POLICIES["grappe"]
    assert isinstance(grappe, Grappe)
    # Predicted 100 s: it starves after waiting 2,000 s. It ran 50 s (200 GPU-s on 4).
    q = QueuedJob(1, T0, "x", 0, 0.0, gpus=4, attained_gpu_s=200.0, predicted_s=100.0)
    assert not grappe.starving(q, T0 + timedelta(seconds=2_000))  # waited 1,950 s
    assert grappe.starving(q, T0 + timedelta(seconds=2_100))  # waited 2,050 s
    assert grappe.key_changes_at(q, T0) == T0 + timedelta(seconds=2_050)
    assert grappe.shielded(q, T0 + timedelta(seconds=2_100))
    assert not POLICIES["las"].shielded(q, T0 + timedelta(seconds=2_100))
    # It ran 5,000 s (20,000 GPU-s), more than predicted: it may wait 20 x 5,000 s.
    q = replace(q, attained_gpu_s=20_000.0)
    assert not grappe.starving(q, T0 + timedelta(seconds=104_000))  # waited 99,000 s
    assert grappe.starving(q, T0 + timedelta(seconds=105_100))  # waited 100,100 s
    assert grappe.key_changes_at(q, T0) == T0 + timedelta(seconds=105_000)


def test_the_live_window_keeps_each_pools_first_jobs_and_those_no_pool_may_run() -> None:
    site = Site(
        "s",
        "t",
        "FR",
        "EU",
        (),
        50.0,
        "local",
        (Pool("two", 4, 16, 64 << 30, "A100", 2), Pool("eight", 1, 48, 256 << 30, "A100", 8)),
    )
    caps = (PoolCapacity("two", 8, 64, 256 << 30), PoolCapacity("eight", 0, 48, 256 << 30))
    snaps = {"s": SiteSnapshot(site, caps)}

    def entry(i: int, gpus: int) -> Entry:
        at = T0 + timedelta(seconds=i)
        return Entry(
            QueuedJob(i, at, "x", 0, 0.0, gpus),
            JobRequest(str(i), "x", Resources(gpus=gpus, cpus=1), 100),
        )

    # Oldest first: four jobs of 8 GPUs (the eight pool only), two of 16 (no pool), two of 1.
    entries = [entry(i, 8) for i in range(4)] + [entry(4, 16), entry(5, 16)]
    entries += [entry(6, 1), entry(7, 1)]
    seen = window(entries, policy("backfill"), snaps, 2)
    # The eight pool's first two are jobs 0 and 1; the two pool's, jobs 6 and 7 (they may
    # run in both, but the eight pool's share is used up); and the first two that no pool
    # may run (the pass writes why they wait).
    assert [e.queued.job_id for e in seen] == [0, 1, 4, 5, 6, 7]
    assert [e.queued.job_id for e in window(entries, policy("backfill"), snaps, 1)] == [0, 4, 6]
    assert [e.queued.job_id for e in window(entries, policy("fifo"), snaps, 3)] == [0, 1, 2]
    assert len(window(entries, policy("backfill"), snaps, 100)) == len(entries)


@pytest.mark.parametrize("seed", range(20))
def test_the_window_found_with_sorts_is_the_walked_one(seed: int) -> None:
    # Random runs (jobs that may run in the same pools, sorted), some longer than the cap:
    # the sorted-runs window keeps exactly what the walk over the whole queue keeps.
    rng = random.Random(seed)
    pool_sets = [("a", "b"), ("b",), ("a",), ("b", "c"), ()]
    jobs = list(range(400))
    rng.shuffle(jobs)
    runs: dict[tuple[str, ...], list[int]] = {p: [] for p in pool_sets}
    for j in jobs:
        runs[rng.choice(pool_sets)].append(j)
    pools_of = {j: p for p, js in runs.items() for j in js}
    cap = rng.choice([1, 5, 30, 120, 500])
    pending = Counter(key for j in jobs for key in pools_of[j])
    walked = per_pool_window(sorted(jobs), lambda j: pools_of[j], pending, cap)
    found = per_pool_window_of_runs(((p, sorted(js)) for p, js in runs.items()), cap)
    assert found == walked
    assert len(walked) < len(jobs) or cap >= 120  # the cap cuts something in most cases
