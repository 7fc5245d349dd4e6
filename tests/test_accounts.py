"""Members' own site accounts: registration, key custody, visibility, placement."""

from __future__ import annotations

import stat

import asyncssh

from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot
from grappe.placement import place
from tests.conftest import World


def private_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


def test_a_member_registers_their_account_and_the_key_is_kept_private(world: World) -> None:
    ada = world.client(world.user("ada"))
    key = private_key()
    resp = ada.post(
        "/api/v1/site-accounts", json={"site": "local", "user": "ada01", "private_key": key}
    )
    assert resp.status_code == 201
    assert resp.json() == {"site": "local", "user": "ada01", "member": "ada", "has_key": True}
    listed = ada.get("/api/v1/site-accounts").json()
    assert listed == [{"member": "ada", "site": "local", "user": "ada01", "has_key": True}]
    assert "PRIVATE" not in str(listed)
    files = list((world.factory.settings.home / "site-keys").iterdir())
    assert len(files) == 1 and files[0].read_text().strip() == key.strip()
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    # another member sees nothing of it; an operator sees every member's
    bob = world.client(world.user("bob"))
    assert bob.get("/api/v1/site-accounts").json() == []
    assert len(world.client().get("/api/v1/site-accounts").json()) == 1
    assert ada.delete("/api/v1/site-accounts/local").status_code == 200
    assert ada.get("/api/v1/site-accounts").json() == []
    assert not files[0].exists()


def test_bad_registrations_name_the_field(world: World) -> None:
    ada = world.client(world.user("ada"))
    cases = [
        ({"site": "nowhere", "user": "ada01"}, "site", "no such site"),
        ({"site": "local", "user": "Ada Lovelace"}, "user", "site user name"),
        ({"site": "local", "user": "ada01", "private_key": "hello"}, "private_key", "private key"),
    ]
    for body, field, words in cases:
        resp = ada.post("/api/v1/site-accounts", json=body)
        assert resp.status_code == 422, body
        problem = resp.json()["error"]["problems"][0]
        assert problem["field"] == field and words in problem["message"]


def _site(name: str, needs_account: bool) -> SiteSnapshot:
    pool = Pool("cpu", nodes=1, cpus_per_node=8, memory_bytes_per_node=8 << 30)
    site = Site(
        name, "op", "FR", "EU", (), 50.0, "slurm", (pool,), requires_member_account=needs_account
    )
    return SiteSnapshot(site, (PoolCapacity("cpu", 0, 8, 8 << 30),))


def test_placement_sends_jobs_to_account_only_sites_only_for_registered_members() -> None:
    sites = [_site("hpc", True), _site("cloud", False)]
    job = JobRequest("1", "demo", Resources(cpus=1), 60)
    without = place(job, sites, gpu_models())
    assert [c.site for c in without.candidates] == ["cloud"]
    assert without.rejected[0].site == "hpc"
    assert "grappe accounts add hpc --user NAME --key PATH" in without.rejected[0].reason
    with_account = place(
        JobRequest("1", "demo", Resources(cpus=1), 60, site_accounts=frozenset({"hpc"})),
        sites,
        gpu_models(),
    )
    assert {c.site for c in with_account.candidates} == {"hpc", "cloud"}
