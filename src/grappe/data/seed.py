"""The datasets a fresh factory starts with: small, real, openly licensed, shipped by a package.

They come from ``vega_datasets`` (MIT-licensed package of the Vega/Altair
project), which bundles a few public-domain datasets with their provenance in
its ``dataset_info.json``. Seeding is idempotent: a dataset already in the
catalog is left as it is; without the package nothing is seeded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from grappe.data import catalog
from grappe.data.spec import DatasetSpec
from grappe.data.storage import iter_chunks
from grappe.domain.projects import Role
from grappe.runtime import Factory
from grappe.services.auth import Principal
from grappe.services.errors import Conflict
from grappe.store import data_repo as dr

log = logging.getLogger("grappe.data")
PACKAGE = "vega_datasets"
SYSTEM = Principal(user_id=0, name="system", role=Role.ADMIN, projects=frozenset())


@dataclass(frozen=True)
class Seed:
    id: str
    key: str  # the name in the package's dataset_info.json
    file: str
    title: str
    publisher: str
    licence: str


# Provenance as the package's dataset_info.json states it; the description is read from there.
SEEDS = (
    Seed(
        "energy/iowa-electricity",
        "iowa-electricity",
        "iowa-electricity.csv",
        "Iowa net electricity generation by source, 2001-2017",
        "U.S. Energy Information Administration",
        "Public domain (U.S. federal government work)",
    ),
    Seed(
        "climate/seattle-weather",
        "seattle-weather",
        "seattle-weather.csv",
        "Seattle daily weather, 2012-2015",
        "NOAA (U.S. National Oceanic and Atmospheric Administration)",
        "Public domain (U.S. federal government work)",
    ),
    Seed(
        "health/crimean-war-mortality",
        "crimea",
        "crimea.json",
        "Monthly deaths of the British Army in the Crimean War by cause, 1854-1856",
        "Florence Nightingale (1858)",
        "Public domain (published 1858)",
    ),
    Seed(
        "mobility/us-airports",
        "airports",
        "airports.csv",
        "US airports: code, city, state, latitude and longitude",
        "OurAirports",
        "Public domain",
    ),
)


def package_dir() -> Path | None:
    """Where the package's files are, without importing it (it would import pandas)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def seed_catalog(factory: Factory) -> list[str]:
    """Add the shipped datasets that the catalog lacks; returns the ids added."""
    root = package_dir()
    if root is None:
        log.info("no %s package: the catalog starts empty", PACKAGE)
        return []
    info = json.loads((root / "dataset_info.json").read_text())
    # Without GRAPPE_DATA_URL the files sit on this machine, where local sites read them.
    local = (
        []
        if factory.settings.data_url
        else [name for name, site in factory.sites.items() if site.backend == "local"]
    )
    added = []
    for seed in SEEDS:
        with factory.store.session() as s:
            exists = dr.dataset(s, seed.id) is not None
            filled = exists and dr.version(s, seed.id, None) is not None
        if filled:
            continue
        entry = info.get(seed.key) or {}
        refs = "; ".join(entry.get("references") or [])
        spec = DatasetSpec(
            id=seed.id,
            title=seed.title,
            description=str(entry.get("description") or ""),
            publisher=seed.publisher,
            licence=seed.licence,
            source=f"{PACKAGE} package, file {seed.file}" + (f"; {refs}" if refs else ""),
            residency=local,
        )
        # Another replica starting at the same moment may seed the same dataset: let it.
        try:
            if not exists:
                catalog.add_dataset(factory, SYSTEM, spec)
            with open(root / "_data" / seed.file, "rb") as f:
                catalog.upload_file(
                    factory, SYSTEM, seed.id, 1, seed.file, iter_chunks(f), f"from {PACKAGE}"
                )
        except (Conflict, IntegrityError):
            continue
        added.append(seed.id)
    return added
