"""factory.yaml: sites and pools as the operator declares them, their problems, the default."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

import grappe.spec.factory as factory_module
from grappe.domain.sites import Site
from grappe.spec.errors import Problem, SpecError, validate
from grappe.spec.factory import FactorySpec, load_factory

GiB = 1024**3

TWO_SITES = """\
sites:
  - name: paris-hpc
    operator: GENCI
    country: fr
    jurisdiction: eu
    certifications: [HDS, ISO27001]
    carbon_g_per_kwh: 56
    pue: 1.3
    backend:
      kind: local
      workdir: /scratch/grappe
    pools:
      - name: h100
        gpu_model: h100
        nodes: 4
        gpus_per_node: 8
        cpus_per_node: 96
        memory_per_node: 1T
        price_eur_gpu_hour: 2.5
      - name: cpu
        nodes: 10
        cpus_per_node: 128
        memory_per_node: 512G
        price_eur_cpu_hour: 0.02
  - name: zurich
    country: CH
    jurisdiction: CH
    carbon_g_per_kwh: 30
    backend: {kind: local}
    pools:
      - name: a100
        gpu_model: A100
        gpus_per_node: 4
        gpu_memory_gb: 40
        cpus_per_node: 32
        memory_per_node: 256GiB
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "factory.yaml"
    path.write_text(text)
    return path


def site_spec(**fields: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "name": "paris",
        "country": "FR",
        "jurisdiction": "EU",
        "carbon_g_per_kwh": 56,
        "backend": {"kind": "local"},
        "pools": [{"name": "default", "cpus_per_node": 4, "memory_per_node": "8G"}],
    }
    site.update(fields)
    return site


def pools(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"cpus_per_node": 4, "memory_per_node": "8G", **e} for e in entries]


def problems(data: Any) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        validate(FactorySpec, data, source="factory.yaml")
    return info.value.problems


# --- a valid factory --------------------------------------------------------------------------


def test_two_sites_load_into_domain_sites(tmp_path: Path) -> None:
    sites = load_factory(write(tmp_path, TWO_SITES)).to_domain()
    assert [s.name for s in sites] == ["paris-hpc", "zurich"]
    assert all(isinstance(s, Site) for s in sites)

    paris, zurich = sites
    assert (paris.country, paris.jurisdiction) == ("FR", "EU")
    assert paris.certifications == ("HDS", "ISO27001")
    assert (paris.carbon_g_per_kwh, paris.pue, paris.backend) == (56, 1.3, "local")
    assert paris.settings == {"workdir": "/scratch/grappe"}
    assert paris.operator == "GENCI"

    h100 = paris.pool("h100")
    assert h100 is not None
    assert (h100.gpu_model, h100.gpus_per_node, h100.nodes, h100.total_gpus) == ("H100", 8, 4, 32)
    assert (h100.cpus_per_node, h100.memory_bytes_per_node) == (96, 1024 * GiB)
    assert h100.gpu_memory_gb == 80  # from the catalog
    assert h100.price_eur_gpu_hour == 2.5

    cpu = paris.pool("cpu")
    assert cpu is not None
    assert (cpu.gpu_model, cpu.gpus_per_node, cpu.total_cpus) == (None, 0, 1280)
    assert cpu.price_eur_cpu_hour == 0.02
    assert paris.pool("missing") is None

    a100 = zurich.pool("a100")
    assert a100 is not None
    assert (a100.gpu_memory_gb, a100.nodes, a100.memory_bytes_per_node) == (40, 1, 256 * GiB)
    assert zurich.pue == 1.2 and zurich.certifications == () and zurich.settings == {}


def test_auto_sizes_come_from_this_machine() -> None:
    spec = FactorySpec.model_validate({"sites": [site_spec(pools=[{"name": "p"}])]})
    p = spec.to_domain()[0].pools[0]
    assert p.cpus_per_node == (os.cpu_count() or 1)
    assert p.memory_bytes_per_node == factory_module.machine_memory_bytes() > 0


# --- problems name the field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "field", "words"),
    [
        (
            site_spec(pools=pools({"name": "p"}, {"name": "p"})),
            "sites.0",
            ["pool 'p' twice"],
        ),
        (
            site_spec(pools=pools({"name": "p", "gpu_model": "X100", "gpus_per_node": 8})),
            "sites.0.pools.0.gpu_model",
            ["unknown GPU model 'X100'", "H100"],
        ),
        (
            site_spec(pools=pools({"name": "p", "gpus_per_node": 8})),
            "sites.0.pools.0",
            ["gpus_per_node 8", "no gpu_model", "add gpu_model"],
        ),
        (
            site_spec(backend={"kind": "kubernetes"}),
            "sites.0.backend.kind",
            ["'kubernetes'", "local"],
        ),
        (site_spec(country="FRA"), "sites.0.country", ["at most 2 characters"]),
        (site_spec(country="F"), "sites.0.country", ["at least 2 characters"]),
        (site_spec(name="bad name"), "sites.0.name", ["'bad name'", "letters, digits"]),
        (
            site_spec(pools=pools({"name": "p", "memory_per_node": "lots"})),
            "sites.0.pools.0.memory_per_node",
            ["'lots'", "64G"],
        ),
        (site_spec(pools=[]), "sites.0.pools", ["at least 1"]),
        (site_spec(pue=0.5), "sites.0.pue", ["0.5", "greater than or equal to 1"]),
        (site_spec(carbon_g_per_kwh=-1), "sites.0.carbon_g_per_kwh", ["-1", "out of range"]),
        (site_spec(backend=None), "sites.0.backend", ["mapping"]),
        (site_spec(region="eu-west"), "sites.0.region", ["unknown field 'region'"]),
        (
            site_spec(pools=pools({"name": "p", "gpus_per_node": -1, "gpu_model": "H100"})),
            "sites.0.pools.0.gpus_per_node",
            ["-1"],
        ),
        pytest.param(
            site_spec(pools=pools({"name": "p", "cpus_per_node": "many"})),
            "sites.0.pools.0.cpus_per_node",
            ["'many'"],
            id="cpus_per_node-not-a-number",
        ),
    ],
)
def test_problem_names_the_field(site: dict, field: str, words: list[str]) -> None:
    found = problems({"sites": [site]})
    assert field in [p.field for p in found], found
    message = " ".join(p.message for p in found if p.field == field)
    for word in words:
        assert word in message


def test_duplicate_site_is_refused_with_its_name() -> None:
    found = problems({"sites": [site_spec(), site_spec()]})
    assert len(found) == 1
    assert "site 'paris' is declared twice" in found[0].message


def test_duplicate_site_problem_names_the_field() -> None:
    assert problems({"sites": [site_spec(), site_spec()]})[0].field == "sites"


def test_problems_in_the_second_site_point_at_it() -> None:
    found = problems({"sites": [site_spec(), site_spec(name="b", backend={"kind": "openstack"})]})
    assert [p.field for p in found] == ["sites.1.backend.kind"]


@pytest.mark.parametrize("data", [{"sites": []}, {}, {"site": [site_spec()]}])
def test_a_factory_needs_sites(data: dict) -> None:
    fields = {p.field for p in problems(data)}
    assert fields & {"sites", "site"}


def test_gpu_model_is_case_insensitive() -> None:
    spec = validate(
        FactorySpec,
        {
            "sites": [
                site_spec(pools=pools({"name": "p", "gpu_model": "mi300x", "gpus_per_node": 8}))
            ]
        },
    )
    assert spec.to_domain()[0].pools[0].gpu_model == "MI300X"


def test_load_factory_reports_the_file(tmp_path: Path) -> None:
    data = yaml.safe_load(TWO_SITES)
    bad = copy.deepcopy(data)
    bad["sites"][1]["backend"]["kind"] = "slurmm"
    path = write(tmp_path, yaml.safe_dump(bad))
    with pytest.raises(SpecError) as info:
        load_factory(path)
    assert str(info.value).startswith(f"{path}: sites.1.backend.kind: ")
    assert info.value.source == str(path)


def test_load_factory_reports_broken_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "sites:\n  - name: a\n    pools: [\n")
    with pytest.raises(SpecError) as info:
        load_factory(path)
    assert "not valid YAML: line" in str(info.value)


# --- the default: this machine ----------------------------------------------------------------


@pytest.fixture
def plain_machine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GPU and no GRAPPE_LOCAL_* overrides, whatever machine runs the tests."""
    for name in ("GRAPPE_LOCAL_COUNTRY", "GRAPPE_LOCAL_JURISDICTION", "GRAPPE_LOCAL_CARBON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(factory_module, "detect_gpus", lambda: (None, 0))
    return monkeypatch


def test_default_factory_is_this_machine(plain_machine: pytest.MonkeyPatch) -> None:
    sites = load_factory(None).to_domain()
    # This machine, and its quantum emulators as a second site (see test_quantum.py).
    assert [s.name for s in sites] == ["local", "emulators"]
    local = sites[0]
    assert (local.name, local.backend) == ("local", "local")
    assert (local.country, local.jurisdiction, local.carbon_g_per_kwh) == ("FR", "EU", 56)
    assert len(local.pools) == 1
    p = local.pools[0]
    assert p.cpus_per_node == (os.cpu_count() or 1)
    assert p.memory_bytes_per_node > 0
    assert (p.nodes, p.gpus_per_node, p.gpu_model) == (1, 0, None)


def test_default_factory_uses_detected_gpus(plain_machine: pytest.MonkeyPatch) -> None:
    plain_machine.setattr(factory_module, "detect_gpus", lambda: ("H100", 8))
    p = load_factory(None).to_domain()[0].pools[0]
    assert (p.gpu_model, p.gpus_per_node, p.gpu_memory_gb) == ("H100", 8, 80)


def test_default_factory_honours_environment(plain_machine: pytest.MonkeyPatch) -> None:
    plain_machine.setenv("GRAPPE_LOCAL_COUNTRY", "ch")
    plain_machine.setenv("GRAPPE_LOCAL_JURISDICTION", "ch")
    plain_machine.setenv("GRAPPE_LOCAL_CARBON", "30")
    local = load_factory(None).to_domain()[0]
    assert (local.country, local.jurisdiction, local.carbon_g_per_kwh) == ("CH", "CH", 30)


def test_detect_gpus_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory_module.shutil, "which", lambda _name: None)
    assert factory_module.detect_gpus() == (None, 0)
