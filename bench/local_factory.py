"""The factory file the end-to-end benchmarks run against: this machine as one local site."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_local_factory(path: Path, cpus: int, memory: str) -> Path:
    """Write a factory with one local site (one pool of ``cpus`` and ``memory``) to ``path``."""
    site = {
        "name": "local",
        "operator": "bench",
        "country": "FR",
        "jurisdiction": "EU",
        "carbon_g_per_kwh": 50,
        "backend": {"kind": "local"},
        "pools": [{"name": "default", "cpus_per_node": cpus, "memory_per_node": memory}],
    }
    path.write_text(yaml.safe_dump({"sites": [site]}))
    return path
