"""Seeding the catalog from the datasets a package ships: once, completely, on any store."""

from __future__ import annotations

import hashlib

from sqlalchemy import delete

from grappe.data.seed import SEEDS, package_dir, seed_catalog
from grappe.store.tables import DatasetVersionRow
from tests.conftest import World, missing


def test_seeding_is_idempotent_and_finishes_a_half_seeded_catalog(world: World) -> None:
    root = package_dir()
    if root is None:
        missing("the vega_datasets package (pip install -e '.[data]')")
        return
    assert sorted(seed_catalog(world.factory)) == sorted(s.id for s in SEEDS)
    assert seed_catalog(world.factory) == []
    # A start that died between adding a dataset and storing its file: the next one stores it.
    with world.factory.store.session() as s:
        s.execute(delete(DatasetVersionRow).where(DatasetVersionRow.dataset_id == SEEDS[0].id))
    assert seed_catalog(world.factory) == [SEEDS[0].id]
    listed = world.client().get("/api/v1/datasets").json()
    assert len(listed) == len(SEEDS) and all(d["latest_version"] == 1 for d in listed)
    for seed in SEEDS:
        got = world.client().get(f"/api/v1/datasets/{seed.id}/files/{seed.file}")
        shipped = (root / "_data" / seed.file).read_bytes()
        assert got.content == shipped
        assert got.headers["X-SHA256"] == hashlib.sha256(shipped).hexdigest()
    health = next(d for d in listed if d["sector"] == "health")
    assert "Nightingale" in health["publisher"] and health["residency"] == ["local"]
