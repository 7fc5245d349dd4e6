"""The pure rules of datasets: ids, file names, where data may go, staging time, bandwidth."""

from __future__ import annotations

from pathlib import Path

import pytest

from grappe.domain.datasets import (
    DataNeed,
    Sensitivity,
    dataset_id_problem,
    file_name_problem,
    parse_bandwidth,
    site_refusal,
    staging_seconds,
)
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, Site, SiteSnapshot
from grappe.placement.filters import data_rules
from grappe.spec.errors import SpecError
from grappe.spec.factory import load_factory
from tests.conftest import local_site, write_factory


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../secret", "may not hold '/'"),
        ("..", "be '..'"),
        ("/etc/passwd", "absolute path"),
        ("C:data.csv", "absolute path"),
        ("a\x00b", "NUL"),
        ("dir\\file", "may not hold '/'"),
        (".hidden", "starting with a letter or digit"),
        ("x" * 201, "200 characters"),
    ],
)
def test_file_names_that_could_leave_the_version_are_refused(name: str, words: str) -> None:
    problem = file_name_problem(name)
    assert problem is not None and words in problem


def test_plain_file_names_and_ids_pass() -> None:
    assert file_name_problem("iowa-electricity.csv") is None
    assert dataset_id_problem("energy/iowa-electricity") is None
    for bad in ("energy", "Energy/x", "energy/x/y", "energy/../x", "/x", "energy/"):
        assert dataset_id_problem(bad) is not None, bad


def need(sensitivity: str, **fields: object) -> DataNeed:
    return DataNeed("s/d", 1, Sensitivity(sensitivity), 10**9, **fields)  # type: ignore[arg-type]


def test_health_data_only_on_hds_sites_restricted_only_on_listed_sites() -> None:
    assert site_refusal(need("open"), "any", ()) is None
    assert site_refusal(need("health"), "hds", ("hds", "ISO27001")) is None
    refused = site_refusal(need("health"), "plain", ("ISO27001",))
    assert refused and "certified HDS" in refused and "ISO27001" in refused
    restricted = need("restricted", allowed_sites=("a", "b"))
    assert site_refusal(restricted, "a", ()) is None
    refused = site_refusal(restricted, "c", ())
    assert refused and "(a, b)" in refused
    # Without a list, the sites holding copies are the allowed ones.
    assert site_refusal(need("restricted", residency=("a",)), "a", ()) is None
    assert site_refusal(need("open", refusal="revoked"), "a", ()) == "revoked"


def test_staging_is_size_over_bandwidth_and_free_where_a_copy_lives() -> None:
    needs = (need("open", residency=("near",)), DataNeed("s/e", 1, Sensitivity.OPEN, 5 * 10**8))
    assert staging_seconds(needs, "far", 1.5e9) == pytest.approx(1.0)
    assert staging_seconds(needs, "near", 1.5e9) == pytest.approx(5e8 / 1.5e9)
    assert staging_seconds((), "far", 1.0) == 0


def test_bandwidth_reads_bits_and_bytes() -> None:
    assert parse_bandwidth("10Gbit/s") == 1.25e9
    assert parse_bandwidth("500MB/s") == 5e8
    assert parse_bandwidth("1kbit/s") == 125
    assert parse_bandwidth(42) == 42.0
    for bad in ("fast", "10Gb", "0MB/s", -1):
        with pytest.raises(ValueError):
            parse_bandwidth(bad)  # type: ignore[arg-type]


def test_factory_bandwidth_default_and_errors(tmp_path: Path) -> None:
    sites = load_factory(
        write_factory(tmp_path / "f.yaml", [local_site("a"), local_site("b", bandwidth="10Gbit/s")])
    ).to_domain()
    assert [s.bandwidth_bytes_s for s in sites] == [125e6, 1.25e9]
    with pytest.raises(SpecError) as err:
        load_factory(write_factory(tmp_path / "g.yaml", [local_site("a", bandwidth="quick")]))
    (problem,) = err.value.problems
    assert problem.field == "sites.0.bandwidth" and "10Gbit/s" in problem.message


def test_sites_whose_engine_cannot_stage_are_rejected_for_jobs_with_inputs() -> None:
    def snap(backend: str) -> SiteSnapshot:
        pool = Pool("p", 1, 4, 1 << 30)
        return SiteSnapshot(Site("s", "", "FR", "EU", (), 50, backend, (pool,)), ())

    job = JobRequest("1", "demo", Resources(cpus=1), 60, inputs=(need("open"),))
    assert data_rules(job, snap("local")) is None
    refused = data_rules(job, snap("ray"))
    assert refused and "cannot stage" in refused
    assert data_rules(JobRequest("2", "demo", Resources(cpus=1), 60), snap("ray")) is None
