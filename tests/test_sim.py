"""Trace replay: exact schedules on hand-made traces, speed, load, fairness and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from grappe.catalog import gpu_models
from grappe.cli.main import app
from grappe.domain.sites import Pool, Site
from grappe.scheduler import decide as decide_module
from grappe.scheduler import loop as loop_module
from grappe.scheduler.policies import POLICIES, KeyedPolicy
from grappe.sim import replay as replay_module
from grappe.sim.federation import offered_load, rescale, total_gpus
from grappe.sim.metrics import KEYS, jain, summarise
from grappe.sim.replay import replay
from grappe.sim.trace import TraceJob
from tests.conftest import local_site, open_world, write_factory


def site(name: str = "s", *pools: tuple[str, str, int, int]) -> Site:
    """A site with pools given as (name, GPU model, nodes, GPUs per node)."""
    made = tuple(Pool(p, n, 64, 256 << 30, model, g) for p, model, n, g in pools)
    default = (Pool("p", 1, 64, 256 << 30, "A100", 4),)
    return Site(name, "t", "FR", "EU", (), 50.0, "local", made or default)


def job(jid: str, at: float, gpus: int, duration: float, vc: str = "x", **kw: Any) -> TraceJob:
    return TraceJob(jid, at, gpus, duration, vc=vc, **kw)


ABC = [job("A", 0, 4, 100), job("B", 1, 2, 50), job("C", 1, 2, 50)]


@pytest.mark.parametrize("policy_name", ["fifo", "grappe"])
def test_known_schedule(policy_name: str) -> None:
    result = replay(ABC, [site()], policy_name)
    times = {r.job_id: (r.start_s, r.end_s) for r in result.records}
    assert times == {"A": (0, 100), "B": (100, 150), "C": (100, 150)}
    m = summarise(result)
    assert m["jobs"] == 3 and m["violations"] == 0
    assert m["avg_jct_s"] == pytest.approx((100 + 149 + 149) / 3)
    assert m["p50_jct_s"] == 149
    assert m["avg_wait_s"] == pytest.approx((0 + 99 + 99) / 3)
    assert m["makespan_s"] == 150
    assert m["utilization"] == pytest.approx((400 + 100 + 100) / (4 * 150))
    assert m["jain_fairness"] == 1.0  # one group


def test_a_waiting_job_keeps_its_pools_free_gpus() -> None:
    # 4 GPUs: A holds 2 for 100 s; B needs 4 and waits; C needs 1 and would fit now.
    jobs = [job("A", 0, 2, 100), job("B", 1, 4, 10), job("C", 2, 1, 10)]
    expected = {"A": 0, "B": 100, "C": 110}
    assert {r.job_id: r.start_s for r in replay(jobs, [site()], "fifo").records} == expected
    # EASY backfill: C ends (at 12) before B's reservation (100), so it passes; B is not late.
    for name in ("backfill", "grappe"):
        starts = {r.job_id: r.start_s for r in replay(jobs, [site()], name).records}
        assert starts == {"A": 0, "B": 100, "C": 2}, name
    # A C that would run past B's reservation on a GPU B needs waits behind B.
    long_c = [*jobs[:2], job("C", 2, 1, 500)]
    for name in ("backfill", "grappe"):
        starts = {r.job_id: r.start_s for r in replay(long_c, [site()], name).records}
        assert starts == expected, name


def test_backfill_passes_where_the_blocked_job_cannot_go() -> None:
    # B waits for the H100 pool; C may use the free A100s meanwhile (fifo keeps it behind B).
    sites = [site("s", ("a", "A100", 1, 4), ("h", "H100", 1, 4))]
    jobs = [
        job("A", 0, 4, 100, gpu_type="H100"),
        job("B", 1, 4, 10, gpu_type="H100"),
        job("C", 2, 1, 10, gpu_type="A100"),
    ]
    fifo = {r.job_id: r.start_s for r in replay(jobs, sites, "fifo").records}
    grappe = {r.job_id: r.start_s for r in replay(jobs, sites, "grappe").records}
    assert fifo["C"] == pytest.approx(fifo["B"]) and fifo["C"] > 2
    assert grappe["C"] == 2


def test_faster_gpus_end_sooner_by_the_catalog_ratio() -> None:
    one = [job("A", 0, 1, 1000)]
    a100 = replay(one, [site("a", ("p", "A100", 1, 8))], "grappe").records[0]
    h100 = replay(one, [site("h", ("p", "H100", 1, 8))], "grappe").records[0]
    ratio = gpu_models()["H100"].relative_speed / gpu_models()["A100"].relative_speed
    assert a100.end_s == pytest.approx(1000)
    assert h100.end_s == pytest.approx(1000 / ratio)
    assert h100.end_s < a100.end_s


def test_gpu_type_is_honoured_and_impossible_jobs_are_rejected() -> None:
    sites = [site("s", ("a", "A100", 4, 8), ("h", "H100", 4, 8))]
    jobs = [job(str(i), i, 8, 100, gpu_type="H100") for i in range(6)]
    jobs += [job("huge", 0, 1000, 10), job("odd", 0, 1, 10, gpu_type="TPUv9")]
    result = replay(jobs, sites, "grappe")
    assert {r.pool for r in result.records} == {"h"}
    assert result.violations == 0
    assert {j for j, _ in result.rejected} == {"huge", "odd"}
    # A 16-GPU job spans two 8-GPU nodes.
    big = replay([job("b", 0, 16, 10)], sites, "fifo")
    assert big.records[0].end_s is not None and not big.rejected


def test_load_rescales_arrivals_to_the_offered_fraction() -> None:
    jobs = [job(str(i), i * 37.0, 1 + i % 4, 100.0 + i) for i in range(50)]
    sites = [site("s", ("p", "A100", 2, 8))]
    scaled, factor = rescale(jobs, total_gpus(sites), 0.9)
    assert offered_load(scaled, total_gpus(sites)) == pytest.approx(0.9)
    assert factor > 0 and scaled[0].submit_time_s == 0
    result = replay(jobs, sites, "grappe", load=0.9)
    assert result.time_scale == pytest.approx(factor)
    assert max(r.submit_s for r in result.records) == pytest.approx(49 * 37.0 * factor)
    assert summarise(result)["violations"] == 0


def test_fairness_is_one_for_identical_groups() -> None:
    jobs = [job(f"{g}{i}", i * 10, 2, 30, vc=g) for i in range(20) for g in ("x", "y")]
    m = summarise(replay(jobs, [site()], "grappe"))
    assert m["jain_fairness"] == pytest.approx(1.0)
    assert jain([1.0, 3.0]) == pytest.approx(0.8)


def test_simulated_and_live_paths_share_the_scheduler_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both modules hold the one function object; a counting wrapper on the place() it calls
    # (looked up in decide's module) proves each path runs that function's body.
    assert loop_module.decide is decide_module.decide
    real = decide_module.place
    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].id)
        return real(*args, **kwargs)

    monkeypatch.setattr(decide_module, "place", counting)
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    try:
        spec = {"name": "t", "project": "demo", "run": "true", "max_runtime": "1m"}
        r = world.client().post("/api/v1/jobs", json=spec)
        assert r.status_code in (200, 201), r.text
        world.tick()
        assert calls, "the live scheduler did not run decide()"
    finally:
        world.factory.close()
    live = len(calls)
    replay(ABC, [site()], "fifo")
    assert len(calls) > live, "replay() did not run decide()"
    # And replay looks decide up on its module: patching it there intercepts the replay too.
    seen: list[int] = []
    real_decide = decide_module.decide

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(decide_module, "decide", wrapper)
    replay(ABC, [site()], "fifo")
    assert seen and replay_module.decide_module is decide_module


def write_trace(path: Path, rows: list[str]) -> Path:
    path.write_text("job_id,submit_time_s,num_gpus,duration_s,vc\n" + "\n".join(rows) + "\n")
    return path


def federation(tmp_path: Path) -> Path:
    pool = {"gpu_model": "A100", "gpus_per_node": 4, "nodes": 2, "memory_per_node": "64G"}
    return write_factory(tmp_path / "fed.yaml", [local_site("s", cpus=16, pool=pool)])


def test_cli_json_has_every_key(tmp_path: Path) -> None:
    rows = [f"j{i},{i * 5},{1 + i % 3},{60 + i},{'ab'[i % 2]}" for i in range(30)]
    trace = write_trace(tmp_path / "t.csv", rows)
    out = CliRunner().invoke(
        app,
        [
            "sim",
            "--trace",
            str(trace),
            "--federation",
            str(federation(tmp_path)),
            "--policy",
            "grappe,fifo",
            "--load",
            "0.9",
            "--json",
            "--limit",
            "20",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [d["policy"] for d in data] == ["grappe", "fifo"]
    for d in data:
        assert set(KEYS) <= set(d) and d["jobs"] == 20 and d["violations"] == 0


def test_cli_table_and_errors(tmp_path: Path) -> None:
    fed = federation(tmp_path)
    good = write_trace(tmp_path / "good.csv", ["a,0,1,10,x"])
    runner = CliRunner()
    ok = runner.invoke(app, ["sim", "--trace", str(good), "--federation", str(fed)])
    assert ok.exit_code == 0 and "grappe" in ok.stdout and "fifo" in ok.stdout
    bad = write_trace(tmp_path / "bad.csv", ["a,0,1,10,x", "b,5,two,10,x"])
    out = runner.invoke(app, ["sim", "--trace", str(bad), "--federation", str(fed)])
    assert out.exit_code == 2
    assert "bad.csv:3" in out.output and "num_gpus" in out.output and "'two'" in out.output
    out = runner.invoke(
        app, ["sim", "--trace", str(good), "--federation", str(fed), "--policy", "srtf"]
    )
    assert out.exit_code == 2 and "srtf" in out.output and "grappe, fifo" in out.output


class Unkeyed:
    """A built-in policy without its sort key: the replay then sorts the whole queue."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("key", "key_changes_at"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def mixed_trace(
    n: int, seed: int = 7, cpu_jobs: bool = False, groups: str = "abc"
) -> list[TraceJob]:
    """Three groups, deep queues, long and short jobs: shares move, LAS tiers change by
    preemption, grappe's predictions make long-waiting jobs starve (their key moves)."""
    rng = random.Random(seed)
    sizes = [0, 1, 1, 2, 4, 8] if cpu_jobs else [1, 1, 2, 4, 8]
    return [
        job(
            f"j{i}",
            i * 20.0,
            rng.choice(sizes),
            rng.choice([30.0, 200.0, 3000.0, 40000.0]) * rng.uniform(0.5, 1.5),
            vc=rng.choice(groups),
            gpu_type="H100" if cpu_jobs and rng.random() < 0.2 else None,
        )
        for i in range(n)
    ]


def schedule(result: Any) -> list[tuple[Any, ...]]:
    return [(r.job_id, r.start_s, r.end_s, r.pool, r.preemptions) for r in result.records]


@pytest.mark.parametrize("groups", ["abc", "a"])
@pytest.mark.parametrize("policy_name", ["fifo", "backfill", "las", "grappe"])
def test_sorted_queue_gives_the_schedule_of_a_full_sort(
    policy_name: str, groups: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight-GPU jobs fit pool p only: the sorted queues (one a group and set of pools, cut
    # at ``max_pending``) must give what sorting the whole queue at every pass gives.
    jobs = mixed_trace(300, groups=groups)
    sites = [site("s", ("p", "A100", 2, 8), ("q", "H100", 1, 4))]
    policies = POLICIES
    monkeypatch.setitem(policies, "unkeyed", Unkeyed(policies[policy_name]))
    assert isinstance(policies[policy_name], KeyedPolicy)
    assert not isinstance(policies["unkeyed"], KeyedPolicy)
    keyed = replay(jobs, sites, policy_name, max_pending=7)
    full = replay(jobs, sites, "unkeyed", max_pending=7)
    assert schedule(keyed) == schedule(full)
    assert keyed.unfinished == 0 and keyed.violations == 0
    if policy_name in ("las", "grappe"):
        assert sum(r.preemptions for r in keyed.records) > 0


@pytest.mark.parametrize("policy_name", ["fifo", "backfill", "las", "grappe"])
def test_the_pass_shortcuts_change_no_decision(
    policy_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two sites, one of two pools: requests with and without a GPU model have different
    # pools, CPU jobs keep every reservation meaningful, deep queues keep pools reserved.
    jobs = mixed_trace(400, seed=11, cpu_jobs=True)
    sites = [
        site("s", ("p", "A100", 2, 8), ("q", "H100", 1, 4)),
        site("t", ("r", "A100", 3, 2)),
    ]
    fast = replay(jobs, sites, policy_name, max_pending=40)
    calls: list[bool] = []
    plain = decide_module.decide

    def exhaustive(*args: Any, **kwargs: Any) -> Any:
        calls.append(True)
        return plain(*args, **{**kwargs, "exhaustive": True})

    monkeypatch.setattr(decide_module, "decide", exhaustive)
    slow = replay(jobs, sites, policy_name, max_pending=40)
    assert calls and len(calls) == slow.decide_calls
    assert schedule(fast) == schedule(slow)
    assert fast.unfinished == 0 and fast.violations == 0
    if policy_name in ("las", "grappe"):
        assert sum(r.preemptions for r in fast.records) > 0


@pytest.mark.parametrize("policy_name", ["backfill", "las", "grappe"])
def test_jobs_too_wide_for_a_free_pool_do_not_hide_the_ones_that_fit_it(policy_name: str) -> None:
    # The four-GPU node is busy until 1,000 s, and three four-GPU jobs wait for it ahead of
    # X, which needs one GPU and finds the one-GPU nodes free. A pass that saw only the
    # first two jobs of the whole queue would not see X until 1,100 s; it sees the first
    # two that may run in each pool, so X starts at once.
    sites = [site("s", ("big", "A100", 1, 4), ("small", "A100", 2, 1))]
    jobs = [
        job("A", 0, 4, 1000),
        *(job(f"W{i}", i, 4, 100) for i in (1, 2, 3)),
        job("X", 4, 1, 100),
    ]
    result = replay(jobs, sites, policy_name, max_pending=2)
    rec = {r.job_id: r for r in result.records}
    assert rec["X"].start_s == 4 and rec["X"].pool == "small"
    # The wide jobs still run one after another (LAS and grappe stop A at 900 s, when it
    # reaches their second tier, for W1).
    first = 1000 if policy_name == "backfill" else 900
    assert [rec[f"W{i}"].start_s for i in (1, 2, 3)] == [first, first + 100, first + 200]
    assert result.unfinished == 0 and result.violations == 0
