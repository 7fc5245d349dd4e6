"""Placement: hard filters with readable reasons, ranking by objective, waits and estimates."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from grappe.catalog import gpu_models
from grappe.domain.accounting import charge
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources, parse_memory
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot
from grappe.placement import OBJECTIVE_WEIGHTS, Placement, place

GPUS = gpu_models()
HOUR = 3600


def pool(
    name: str = "gpu",
    model: str | None = "H100",
    gpus_per_node: int = 8,
    nodes: int = 4,
    cpus: int = 64,
    memory: str = "512G",
    price: float = 2.0,
    cpu_price: float = 0.0,
) -> Pool:
    return Pool(
        name=name,
        nodes=nodes,
        cpus_per_node=cpus,
        memory_bytes_per_node=parse_memory(memory),
        gpu_model=model if gpus_per_node else None,
        gpus_per_node=gpus_per_node,
        price_eur_gpu_hour=price,
        price_eur_cpu_hour=cpu_price,
    )


def site(
    name: str = "paris",
    country: str = "FR",
    jurisdiction: str = "EU",
    certifications: tuple[str, ...] = (),
    carbon: float = 50.0,
    pools: tuple[Pool, ...] | None = None,
    pue: float = 1.2,
) -> Site:
    return Site(
        name=name,
        operator="test",
        country=country,
        jurisdiction=jurisdiction,
        certifications=certifications,
        carbon_g_per_kwh=carbon,
        backend="local",
        pools=pools if pools is not None else (pool(),),
        pue=pue,
    )


def free(p: Pool, **overrides: Any) -> PoolCapacity:
    """An empty pool's capacity, with ``overrides``."""
    values: dict[str, Any] = {
        "pool": p.name,
        "free_gpus": p.total_gpus,
        "free_cpus": p.total_cpus,
        "free_memory_bytes": p.nodes * p.memory_bytes_per_node,
        "free_nodes": p.nodes,
    }
    values.update(overrides)
    return PoolCapacity(**values)


def snapshot(s: Site, available: bool = True, error: str = "", **overrides: Any) -> SiteSnapshot:
    return SiteSnapshot(s, tuple(free(p, **overrides) for p in s.pools), available, error)


def job(
    gpus: int = 8,
    model: str | None = None,
    cpus: int = 8,
    memory: str = "64G",
    nodes: int = 1,
    runtime: int = HOUR,
    objective: str = "time",
    **constraints: Any,
) -> JobRequest:
    return JobRequest(
        id="j1",
        project="demo",
        resources=Resources(
            gpus=gpus,
            gpu_model=model,
            cpus=cpus,
            memory_bytes=parse_memory(memory),
            nodes=nodes,
        ),
        max_runtime_s=runtime,
        objective=objective,
        **constraints,
    )


# --- hard filters -----------------------------------------------------------------------------

FILTER_CASES = [
    pytest.param(
        job(jurisdiction="EU"),
        snapshot(site("zurich", country="CH", jurisdiction="CH")),
        None,
        ["jurisdiction CH", "country CH", "constraints.jurisdiction EU"],
        id="jurisdiction",
    ),
    pytest.param(
        job(jurisdiction="DE"),
        snapshot(site("paris")),
        None,
        ["jurisdiction EU", "country FR", "constraints.jurisdiction DE"],
        id="jurisdiction-country",
    ),
    pytest.param(
        job(certifications=("HDS",)),
        snapshot(site("paris")),
        None,
        ["lacks certification HDS", "holds: none"],
        id="certification-none-held",
    ),
    pytest.param(
        job(certifications=("HDS", "ISO27001")),
        snapshot(site("paris", certifications=("ISO27001",))),
        None,
        ["lacks certification HDS", "holds: ISO27001"],
        id="certification-other-held",
    ),
    pytest.param(
        job(sites_allow=("lyon", "nice")),
        snapshot(site("paris")),
        None,
        ["constraints.sites.allow", "'lyon'", "'nice'"],
        id="sites-allow",
    ),
    pytest.param(
        job(sites_deny=("paris",)),
        snapshot(site("paris")),
        None,
        ["constraints.sites.deny"],
        id="sites-deny",
    ),
    pytest.param(
        job(model="H100"),
        snapshot(site(pools=(pool("a100", model="A100"),))),
        "a100",
        ["has A100 GPUs", "asks for H100"],
        id="gpu-model",
    ),
    pytest.param(
        job(gpus=4),
        snapshot(site(pools=(pool("cpu", gpus_per_node=0),))),
        "cpu",
        ["pool cpu has no GPUs", "asks for 4"],
        id="no-gpus",
    ),
    pytest.param(
        job(gpus=16, nodes=1),
        snapshot(site()),
        "gpu",
        ["8 GPUs per node", "needs 16 on each of 1 node"],
        id="gpus-per-node",
    ),
    pytest.param(
        job(gpus=64, nodes=8),
        snapshot(site()),
        "gpu",
        ["has 4 nodes", "asks for 8"],
        id="nodes",
    ),
    pytest.param(
        job(cpus=128),
        snapshot(site()),
        "gpu",
        ["64 CPUs per node", "needs 128"],
        id="cpus-per-node",
    ),
    pytest.param(
        job(memory="1T"),
        snapshot(site()),
        "gpu",
        ["512G of memory per node", "needs 1T on each node"],
        id="memory",
    ),
    pytest.param(
        job(max_price_eur_gpu_hour=3.0),
        snapshot(site(pools=(pool(price=4.5),))),
        "gpu",
        ["costs 4.5 EUR per GPU-hour", "constraints.max_price_eur_gpu_hour 3"],
        id="price-cap",
    ),
    pytest.param(
        job(),
        snapshot(site(), available=False, error="connection refused"),
        None,
        ["not answering", "connection refused"],
        id="site-down",
    ),
    pytest.param(
        job(),
        SiteSnapshot(site(), (), available=False),
        None,
        ["not answering", "no reply"],
        id="site-down-no-error",
    ),
    pytest.param(
        job(),
        SiteSnapshot(site(), ()),
        "gpu",
        ["pool gpu reported no capacity"],
        id="no-capacity-report",
    ),
]


@pytest.mark.parametrize(("request_", "snap", "rejected_pool", "words"), FILTER_CASES)
def test_hard_filter_rejects_with_a_readable_reason(
    request_: JobRequest, snap: SiteSnapshot, rejected_pool: str | None, words: list[str]
) -> None:
    placement = place(request_, [snap], GPUS)
    assert placement.candidates == ()
    assert placement.best is None
    assert len(placement.rejected) == 1
    rejection = placement.rejected[0]
    assert (rejection.site, rejection.pool) == (snap.site.name, rejected_pool)
    for word in words:
        assert word in rejection.reason
        assert word in placement.summary()


@pytest.mark.parametrize(
    "request_",
    [
        job(jurisdiction="EU"),
        job(jurisdiction="FR"),
        job(jurisdiction="fr"),
        job(certifications=("hds",)),
        job(sites_allow=("paris",)),
        job(sites_deny=("lyon",)),
        job(model="H100"),
        job(gpus=32, nodes=4),
        job(max_price_eur_gpu_hour=2.0),
        job(gpus=0, max_price_eur_gpu_hour=0.1),  # a price cap on GPUs says nothing of CPUs
    ],
)
def test_matching_constraints_keep_the_site(request_: JobRequest) -> None:
    snap = snapshot(site("paris", certifications=("HDS",)))
    placement = place(request_, [snap], GPUS)
    assert placement.rejected == ()
    assert placement.best is not None and placement.best.site == "paris"


def test_cpu_job_may_use_a_gpu_pool_and_a_cpu_pool() -> None:
    s = site(pools=(pool("gpu"), pool("cpu", gpus_per_node=0)))
    placement = place(job(gpus=0), [snapshot(s)], GPUS)
    assert {c.pool for c in placement.candidates} == {"gpu", "cpu"}


def test_only_the_rejected_pool_of_a_site_is_dropped() -> None:
    s = site(pools=(pool("h100", model="H100"), pool("a100", model="A100")))
    placement = place(job(model="A100"), [snapshot(s)], GPUS)
    assert [c.pool for c in placement.candidates] == ["a100"]
    assert [(r.pool, "has H100 GPUs" in r.reason) for r in placement.rejected] == [("h100", True)]


def test_all_rejected_summary_lists_every_reason() -> None:
    snaps = [
        snapshot(site("zurich", country="CH", jurisdiction="CH")),
        snapshot(site("paris"), available=False, error="timeout"),
        snapshot(site("lyon", pools=(pool("small", memory="16G"),))),
    ]
    placement = place(job(jurisdiction="EU", memory="64G"), snaps, GPUS)
    assert placement.best is None
    summary = placement.summary()
    assert summary.startswith("no site can run this job: ")
    assert "zurich: jurisdiction CH (country CH)" in summary
    assert "paris: site is not answering (timeout)" in summary
    assert "lyon/small: pool small has 16G of memory per node" in summary
    assert len(placement.rejected) == 3
    for rejection in placement.rejected:
        assert rejection.reason in summary


def test_no_site_declared() -> None:
    assert place(job(), [], GPUS).summary() == "no site is declared"


def test_unknown_objective_is_refused() -> None:
    with pytest.raises(ValueError, match="'fastest'"):
        place(job(objective="fastest"), [snapshot(site())], GPUS)


# --- ranking ----------------------------------------------------------------------------------

FAST = site("fast", carbon=400, pools=(pool("h100", model="H100", price=10.0),))
CHEAP = site("cheap", carbon=400, pools=(pool("a100", model="A100", price=0.5),))
GREEN = site("green", carbon=20, pools=(pool("a100", model="A100", price=3.0),))
THREE = [snapshot(FAST), snapshot(CHEAP), snapshot(GREEN)]


@pytest.mark.parametrize(
    ("objective", "winner"), [("time", "fast"), ("cost", "cheap"), ("carbon", "green")]
)
def test_objective_picks_a_different_site(objective: str, winner: str) -> None:
    placement = place(job(gpus=8, runtime=10 * HOUR, objective=objective), THREE, GPUS)
    assert placement.objective == objective
    assert placement.best is not None and placement.best.site == winner
    assert len(placement.candidates) == 3
    scores = [c.score for c in placement.candidates]
    assert scores == sorted(scores)
    assert placement.summary() == f"best: {winner}/{placement.best.pool}, can start now"


@pytest.mark.parametrize("objective", list(OBJECTIVE_WEIGHTS))
def test_breakdown_points_sum_to_the_score(objective: str) -> None:
    placement = place(job(gpus=8, runtime=10 * HOUR, objective=objective), THREE, GPUS)
    for cand in placement.candidates:
        assert set(cand.breakdown) == {"completion_s", "cost_eur", "kg_co2"}
        weights = tuple(cand.breakdown[k]["weight"] for k in ("completion_s", "cost_eur", "kg_co2"))
        assert weights == OBJECTIVE_WEIGHTS[objective]
        points = sum(part["points"] for part in cand.breakdown.values())
        assert points == pytest.approx(cand.score, abs=1e-3)
        for part in cand.breakdown.values():
            assert 0.0 <= part["normalised"] <= 1.0
            assert part["points"] == pytest.approx(part["weight"] * part["normalised"], abs=1e-3)
        assert cand.breakdown["cost_eur"]["value"] == pytest.approx(cand.cost_eur, abs=1e-4)


def test_estimates_of_the_three_sites() -> None:
    placement = place(job(gpus=8, runtime=10 * HOUR), THREE, GPUS)
    by_site = {c.site: c for c in placement.candidates}
    h100 = GPUS["H100"].relative_speed
    assert by_site["fast"].runtime_s == pytest.approx(10 * HOUR / h100)
    assert by_site["cheap"].runtime_s == pytest.approx(10 * HOUR)
    assert by_site["cheap"].cost_eur == pytest.approx(8 * 10 * 0.5)
    assert by_site["green"].cost_eur == pytest.approx(8 * 10 * 3.0)
    # Same A100 hardware, same time: CO2 follows the grid's carbon intensity.
    assert by_site["green"].kg_co2 == pytest.approx(by_site["cheap"].kg_co2 * 20 / 400)
    assert all(c.completion_s == c.wait_s + c.runtime_s for c in placement.candidates)


def test_identical_candidates_tie_on_score_and_sort_by_name() -> None:
    twins = [snapshot(replace(FAST, name=n)) for n in ("b-site", "a-site")]
    placement = place(job(), twins, GPUS)
    assert [c.site for c in placement.candidates] == ["a-site", "b-site"]
    assert all(c.score == 0 for c in placement.candidates)


# --- waits and runtimes -----------------------------------------------------------------------


def test_busy_pool_waits_for_the_work_ahead_and_free_pool_does_not() -> None:
    busy_site, free_site = replace(FAST, name="busy"), replace(FAST, name="idle")
    busy = snapshot(
        busy_site,
        free_gpus=4,
        pending_gpu_seconds=16 * HOUR,
        running_gpu_seconds_left=16 * HOUR,
    )
    placement = place(job(gpus=8), [busy, snapshot(free_site)], GPUS)
    by_site = {c.site: c for c in placement.candidates}
    assert by_site["busy"].can_start_now is False
    # 32 GPU-hours ahead spread over the pool's 32 GPUs: about an hour.
    assert by_site["busy"].wait_s == pytest.approx(HOUR)
    assert by_site["idle"].can_start_now is True
    assert by_site["idle"].wait_s == 0
    assert placement.best is not None and placement.best.site == "idle"
    assert by_site["busy"].completion_s == pytest.approx(HOUR + by_site["busy"].runtime_s)


def test_busy_pool_summary_says_when_it_may_start() -> None:
    busy = snapshot(FAST, free_gpus=0, pending_gpu_seconds=32 * 600)
    placement = place(job(gpus=8), [busy], GPUS)
    assert placement.best is not None
    assert placement.best.wait_s == pytest.approx(600)
    assert placement.summary() == "best: fast/h100, can start in about 600s"


def test_cpu_job_waits_on_cpu_work() -> None:
    s = site(pools=(pool("cpu", gpus_per_node=0, nodes=2, cpus=32),))
    busy = snapshot(s, free_cpus=2, pending_cpu_seconds=64 * HOUR, pending_gpu_seconds=1e9)
    cand = place(job(gpus=0, cpus=8), [busy], GPUS).best
    assert cand is not None
    assert cand.can_start_now is False
    assert cand.wait_s == pytest.approx(HOUR)  # 64 CPU-hours over 64 CPUs


@pytest.mark.parametrize(
    ("resource", "overrides"),
    [
        ("gpus", {"free_gpus": 7}),
        ("cpus", {"free_cpus": 7}),
        ("memory", {"free_memory_bytes": parse_memory("63G")}),
    ],
)
def test_any_short_resource_means_it_cannot_start_now(resource: str, overrides: dict) -> None:
    cand = place(job(gpus=8, cpus=8, memory="64G"), [snapshot(FAST, **overrides)], GPUS).best
    assert cand is not None and cand.can_start_now is False, resource


def test_runtime_scales_with_relative_speed() -> None:
    s = site(
        pools=(
            pool("v100", model="V100"),
            pool("a100", model="A100"),
            pool("h100", model="H100"),
        )
    )
    placement = place(job(gpus=8, runtime=HOUR), [snapshot(s)], GPUS)
    runtime = {c.pool: c.runtime_s for c in placement.candidates}
    # A job that names no model is timed on the reference A100.
    assert runtime["a100"] == pytest.approx(HOUR)
    assert runtime["h100"] == pytest.approx(HOUR / GPUS["H100"].relative_speed)
    assert runtime["v100"] == pytest.approx(HOUR / GPUS["V100"].relative_speed)
    assert runtime["v100"] > runtime["a100"] > runtime["h100"]


def test_runtime_is_as_written_for_the_model_asked_for() -> None:
    cand = place(job(gpus=8, model="H100", runtime=HOUR), [snapshot(FAST)], GPUS).best
    assert cand is not None and cand.runtime_s == pytest.approx(HOUR)


def test_cpu_job_runtime_ignores_gpu_speed() -> None:
    cand = place(job(gpus=0, runtime=HOUR), [snapshot(FAST)], GPUS).best
    assert cand is not None and cand.runtime_s == HOUR


# --- serialisation ----------------------------------------------------------------------------


def test_placement_as_dict_is_json() -> None:
    snaps = [*THREE, snapshot(site("zurich", country="CH", jurisdiction="CH"))]
    placement = place(job(gpus=8, runtime=10 * HOUR, jurisdiction="EU"), snaps, GPUS)
    data = json.loads(json.dumps(placement.as_dict()))
    assert data["objective"] == "time"
    assert [c["site"] for c in data["candidates"]] == [c.site for c in placement.candidates]
    assert data["rejected"] == [
        {"site": "zurich", "pool": None, "reason": placement.rejected[0].reason}
    ]
    assert data["summary"] == placement.summary()
    best = data["candidates"][0]
    assert set(best) >= {"can_start_now", "wait_s", "runtime_s", "cost_eur", "kg_co2", "score"}
    assert set(best["breakdown"]) == {"completion_s", "cost_eur", "kg_co2"}


def test_all_rejected_as_dict_is_json() -> None:
    placement = place(job(jurisdiction="US"), THREE, GPUS)
    data = json.loads(json.dumps(placement.as_dict()))
    assert data["candidates"] == []
    assert len(data["rejected"]) == 3
    assert data["summary"].startswith("no site can run this job")


def test_placement_is_a_value() -> None:
    a = place(job(), THREE, GPUS)
    b = place(job(), THREE, GPUS)
    assert isinstance(a, Placement) and a == b


# --- charge (shared by placement and usage) ---------------------------------------------------


def test_charge_counts_gpu_and_cpu_hours_euros_and_co2() -> None:
    p = pool(price=2.0, cpu_price=0.05)
    s = site(carbon=100, pools=(p,), pue=1.2)
    r = Resources(gpus=8, gpu_model="H100", cpus=10)
    c = charge(r, s, p, 2 * HOUR, GPUS["H100"])
    assert c.gpu_hours == pytest.approx(16)
    assert c.cpu_hours == pytest.approx(20)
    assert c.eur == pytest.approx(16 * 2.0 + 20 * 0.05)
    # (8 x 700 W + 10 x 4 W) x 2 h x PUE 1.2 = 13.536 kWh, at 100 g/kWh.
    assert c.kg_co2 == pytest.approx(13.536 * 0.1)


def test_negative_time_charges_nothing() -> None:
    c = charge(Resources(gpus=1), site(), pool(), -10, GPUS["H100"])
    assert (c.gpu_hours, c.cpu_hours, c.eur, c.kg_co2) == (0, 0, 0, 0)
