"""The reference federation (examples/federations/eu-ai-factories.yaml), declared snapshots,
and ``grappe plan --federation``: where in Europe a job would run, with no server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, Site
from grappe.placement.declared import declared_snapshots
from grappe.placement.place import place
from grappe.spec.factory import load_factory

ROOT = Path(__file__).resolve().parents[1]
FEDERATION = ROOT / "examples" / "federations" / "eu-ai-factories.yaml"
SITES = {"jean-zay", "alice-recoque", "jupiter", "scaleway", "mistral-compute"}
GIB = 1024**3


# ---------------------------------------------------------------- the file


@pytest.fixture(scope="module")
def sites() -> dict[str, Site]:
    return {s.name: s for s in load_factory(FEDERATION).to_domain()}


def gpus_of(site: Site, model: str | None = None) -> int:
    return sum(p.total_gpus for p in site.pools if model is None or p.gpu_model == model)


def test_every_site_loads(sites: dict[str, Site]) -> None:
    assert set(sites) == SITES


def test_gpu_counts_match_the_public_figures(sites: dict[str, Site]) -> None:
    # JUPITER: ~6,000 nodes of 4 GH200 (JSC); Mistral Compute: 18,000 Grace Blackwell.
    assert gpus_of(sites["jupiter"], "GH200") == 24_000
    assert gpus_of(sites["mistral-compute"], "GB200") == 18_000
    # Jean Zay: 1,456 H100 (364 nodes of 4) plus its A100 and V100 partitions, ~4,000-4,600.
    jean_zay = sites["jean-zay"]
    h100 = next(p for p in jean_zay.pools if p.gpu_model == "H100")
    assert (h100.nodes, h100.gpus_per_node) == (364, 4)
    assert {p.gpu_model for p in jean_zay.pools} == {"H100", "A100", "V100"}
    assert 3_500 <= gpus_of(jean_zay) <= 5_000
    # Alice Recoque: 10,000 to 15,000 GPUs announced; Scaleway: about 5,000 (H100 and B300).
    assert 10_000 <= gpus_of(sites["alice-recoque"]) <= 15_000
    scaleway = sites["scaleway"]
    assert {p.gpu_model for p in scaleway.pools} == {"H100", "B300"}
    assert 4_500 <= gpus_of(scaleway) <= 5_500


def test_every_site_has_country_jurisdiction_and_carbon(sites: dict[str, Site]) -> None:
    for site in sites.values():
        assert re.fullmatch(r"[A-Z]{2}", site.country), site.name
        assert site.jurisdiction == "EU", site.name
        assert site.carbon_g_per_kwh > 0, site.name
        assert site.operator, site.name
    # France's nuclear-heavy grid is far lower than Germany's (Ember, 2023: 56 vs 381).
    assert sites["jean-zay"].carbon_g_per_kwh < sites["jupiter"].carbon_g_per_kwh / 4


def test_every_pool_is_sized_in_full(sites: dict[str, Site]) -> None:
    raw = yaml.safe_load(FEDERATION.read_text())
    for site in raw["sites"]:
        for pool in site["pools"]:
            where = f"{site['name']}/{pool['name']}"
            # Nothing left to this machine's size ("auto") in a description of other machines.
            assert isinstance(pool["cpus_per_node"], int), where
            assert pool["memory_per_node"] != "auto", where
            assert pool["gpus_per_node"] > 0 and pool["gpu_model"], where
            assert "price_eur_gpu_hour" in pool, where


def _blocks(text: str, indent: str) -> list[str]:
    """The raw text of each ``- name:`` item at this indentation, in order."""
    starts = [m.start() for m in re.finditer(rf"^{indent}- name: ", text, re.M)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


SOURCE_RE = re.compile(r"http|IDRIS|CNRS|JSC|Ember|Scaleway|NVIDIA|AMD|Eviden|ESTIMATE", re.I)


def test_every_site_and_pool_cites_its_sources() -> None:
    text = FEDERATION.read_text()
    site_blocks = _blocks(text, "  ")
    assert len(site_blocks) == len(SITES)
    for block in site_blocks:
        name = block.split("\n", 1)[0].split(":", 1)[1].strip()
        comments = [line.split("#", 1)[1] for line in block.splitlines() if "#" in line]
        assert len(comments) >= 5, f"{name}: its numbers need their sources in comments"
        assert any("http" in c for c in comments), f"{name}: no address for any source"
        for pool in _blocks(block, "      "):
            assert any(SOURCE_RE.search(line) for line in pool.splitlines() if "#" in line), (
                f"{name}: pool {pool.splitlines()[0].strip()} names no source"
            )


def test_estimates_are_labelled() -> None:
    text = FEDERATION.read_text()
    # Facts that are not public are marked as estimates where they are used.
    for what in ("GPU count is not published", "no public price", "count per GPU"):
        line = next(line for line in text.splitlines() if what in line)
        context = text[text.index(line) - 300 : text.index(line) + 300]
        assert "ESTIMATE" in context, what


# ---------------------------------------------------------------- declared snapshots


def _site(name: str, *pools: Pool) -> Site:
    return Site(
        name=name,
        operator="test",
        country="FR",
        jurisdiction="EU",
        certifications=(),
        carbon_g_per_kwh=56,
        backend="slurm",
        pools=pools,
    )


GPU_POOL = Pool("gpu", nodes=3, cpus_per_node=64, memory_bytes_per_node=512 * GIB,
                gpu_model="H100", gpus_per_node=4)  # fmt: skip
CPU_POOL = Pool("cpu", nodes=10, cpus_per_node=128, memory_bytes_per_node=256 * GIB)


def test_declared_snapshots_free_the_declared_totals() -> None:
    [snap] = declared_snapshots([_site("a", GPU_POOL, CPU_POOL)])
    assert snap.available and snap.error == ""
    gpu, cpu = snap.capacity("gpu"), snap.capacity("cpu")
    assert gpu is not None and cpu is not None
    assert (gpu.free_gpus, gpu.free_cpus, gpu.free_memory_bytes, gpu.free_nodes) == (
        12,
        192,
        3 * 512 * GIB,
        3,
    )
    assert (cpu.free_gpus, cpu.free_cpus, cpu.free_memory_bytes, cpu.free_nodes) == (
        0,
        1280,
        10 * 256 * GIB,
        10,
    )
    for cap in (gpu, cpu):
        assert cap.pending_gpu_seconds == cap.running_gpu_seconds_left == 0
        assert cap.pending_cpu_seconds == cap.running_cpu_seconds_left == 0


def test_declared_snapshots_keep_sites_in_order_and_are_pure() -> None:
    sites = [_site("b", CPU_POOL), _site("a", GPU_POOL)]
    snaps = declared_snapshots(sites)
    assert [s.site for s in snaps] == sites
    assert declared_snapshots(sites) == snaps
    assert declared_snapshots([]) == []


def _job(gpus: int, nodes: int = 1, model: str | None = "H100") -> JobRequest:
    return JobRequest(
        id="plan",
        project="",
        resources=Resources(gpus=gpus, gpu_model=model, cpus=1, memory_bytes=0, nodes=nodes),
        max_runtime_s=3600,
    )


def test_placement_on_declared_snapshots_starts_now_or_explains() -> None:
    snaps = declared_snapshots([_site("a", GPU_POOL, CPU_POOL)])
    fits = place(_job(gpus=8, nodes=2), snaps, gpu_models())
    assert fits.best is not None and (fits.best.site, fits.best.pool) == ("a", "gpu")
    assert fits.best.can_start_now and fits.best.wait_s == 0
    too_big = place(_job(gpus=16, nodes=4), snaps, gpu_models())
    assert too_big.best is None
    assert any("has 3 nodes" in r.reason for r in too_big.rejected)


# ---------------------------------------------------------------- grappe plan --federation


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPPE_URL", "GRAPPE_TOKEN")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def grappe_plan(
    tmp_path: Path, job: dict[str, Any], *args: str, federation: Path = FEDERATION
) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / f"{job['name']}.yaml"
    spec.write_text(yaml.safe_dump({"run": "true", **job}))
    return subprocess.run(
        [sys.executable, "-m", "grappe.cli.main", "plan", "--federation", str(federation)]
        + [str(spec), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=ROOT,
    )


def plan_json(tmp_path: Path, job: dict[str, Any]) -> dict[str, Any]:
    done = grappe_plan(tmp_path, job, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"objective", "candidates", "rejected", "summary"}
    return result


def test_gh200_job_goes_to_jupiter(tmp_path: Path) -> None:
    result = plan_json(tmp_path, {"name": "gh", "resources": {"gpus": "GH200:4"}})
    best = result["candidates"][0]
    assert (best["site"], best["pool"], best["gpu_model"]) == ("jupiter", "booster", "GH200")
    assert best["can_start_now"]
    assert result["summary"] == "best: jupiter/booster, can start now"


@pytest.mark.parametrize(
    "resources",
    [{"gpus": "H100:8"}, {"gpus": "H100:8", "nodes": 2}, {"gpus": 8, "nodes": 2}],
    ids=["h100x8", "h100x8-on-2-nodes", "any-8-on-2-nodes"],
)
def test_carbon_objective_prefers_france_over_germany(
    tmp_path: Path, sites: dict[str, Site], resources: dict[str, Any]
) -> None:
    result = plan_json(tmp_path, {"name": "green", "resources": resources, "objective": "carbon"})
    assert result["objective"] == "carbon"
    ranked = [sites[c["site"]].country for c in result["candidates"]]
    assert ranked and ranked[0] == "FR"
    if "DE" in ranked:  # every French place ranks before any German one
        assert max(i for i, cc in enumerate(ranked) if cc == "FR") < ranked.index("DE")
        jupiter = next(c for c in result["candidates"] if c["site"] == "jupiter")
        assert jupiter["kg_co2"] == max(c["kg_co2"] for c in result["candidates"])


def test_h100_job_is_refused_by_gh200_and_small_nodes_with_reasons(tmp_path: Path) -> None:
    result = plan_json(tmp_path, {"name": "h100", "resources": {"gpus": "H100:8"}})
    reasons = {(r["site"], r["pool"]): r["reason"] for r in result["rejected"]}
    assert "has GH200 GPUs; the job asks for H100" in reasons[("jupiter", "booster")]
    assert "has 4 GPUs per node" in reasons[("jean-zay", "h100")]
    assert [(c["site"], c["pool"]) for c in result["candidates"]] == [("scaleway", "h100-sxm")]


def test_secnumcloud_job_is_refused_everywhere_with_the_reason(tmp_path: Path) -> None:
    job = {
        "name": "snc",
        "resources": {"gpus": 1},
        "constraints": {"certifications": ["SecNumCloud"]},
    }
    result = plan_json(tmp_path, job)
    assert result["candidates"] == []
    assert {r["site"] for r in result["rejected"]} == SITES
    assert all("lacks certification SecNumCloud" in r["reason"] for r in result["rejected"])
    text = grappe_plan(tmp_path, job)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("no site can run this job:")
    assert "scaleway: lacks certification SecNumCloud (holds: ISO27001, HDS)" in text.stdout


def test_hds_job_goes_where_hds_is_held(tmp_path: Path) -> None:
    job = {"name": "hds", "resources": {"gpus": 1}, "constraints": {"certifications": ["HDS"]}}
    result = plan_json(tmp_path, job)
    assert {c["site"] for c in result["candidates"]} == {"scaleway"}


def test_table_output_ranks_and_explains(tmp_path: Path) -> None:
    done = grappe_plan(tmp_path, {"name": "t", "resources": {"gpus": "GH200:4"}})
    assert done.returncode == 0, done.stderr
    assert "Candidates (objective: time" in done.stdout
    assert re.search(r"^1\s+jupiter\s+booster\s+GH200\s+now", done.stdout, re.M)
    assert "Rejected" in done.stdout and "mistral-compute" in done.stdout


def test_broken_federation_exits_2_naming_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        FEDERATION.read_text().replace("carbon_g_per_kwh: 381", "carbon_g_per_kwh: lots", 1)
    )
    done = grappe_plan(tmp_path, {"name": "b", "resources": {"gpus": 1}}, federation=broken)
    assert done.returncode == 2
    assert "the federation is not valid" in done.stderr
    assert "sites.2.carbon_g_per_kwh (got 'lots')" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unknown_gpu_model_in_federation_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(FEDERATION.read_text().replace("gpu_model: MI300X", "gpu_model: MI430X"))
    done = grappe_plan(tmp_path, {"name": "b", "resources": {"gpus": 1}}, federation=broken)
    assert done.returncode == 2
    assert "sites.1.pools.0.gpu_model" in done.stderr and "unknown GPU model" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_federation_exits_2(tmp_path: Path) -> None:
    done = grappe_plan(
        tmp_path, {"name": "m", "resources": {"gpus": 1}}, federation=tmp_path / "nope.yaml"
    )
    assert done.returncode == 2
    assert "--federation" in done.stderr and "nope.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_job_spec_still_exits_2(tmp_path: Path) -> None:
    done = grappe_plan(tmp_path, {"name": "bad", "resources": {"gpus": "H100:eight"}})
    assert done.returncode == 2
    assert "the job spec is not valid" in done.stderr and "resources.gpus" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_federation_plan_still_asks_the_factory(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "j", "run": "true"}))
    env = _env() | {"GRAPPE_URL": "http://127.0.0.1:9"}  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "grappe.cli.main", "plan", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "cannot reach the factory at http://127.0.0.1:9" in done.stderr
