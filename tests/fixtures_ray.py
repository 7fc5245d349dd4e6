"""A real Ray head for the Ray backend's tests, started with ``deploy/dev/ray/up.sh``.

Ray listens on 0.0.0.0 and advertises the machine's address even when told
127.0.0.1, so these tests run only in a network namespace whose one interface
is ``lo``: there Ray can reach nothing but loopback. ``make test`` runs them so
(``deploy/dev/isolated.sh``); by hand, ``deploy/dev/isolated.sh .venv/bin/python -m
pytest tests/test_ray_backend.py`` or ``unshare -n sh -c 'ip link set lo up; pytest ...'``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dev" / "ray"
NETNS_HINT = (
    "Ray tests run in a network namespace with only loopback: make test does this "
    "(unshare -n, deploy/dev/isolated.sh); by hand: unshare -n sh -c 'ip link set lo up; "
    "pytest ...' or deploy/dev/isolated.sh .venv/bin/python -m pytest ..."
)


@dataclass(frozen=True)
class RayCluster:
    """A running Ray head: its Jobs API ``address`` and the directory ``up.sh`` used."""

    address: str
    state: Path

    def site(self, name: str = "cloud", **overrides: Any) -> dict[str, Any]:
        """A ``factory.yaml`` site run by this head; ``pool=`` merges into its one pool."""
        pool: dict[str, Any] = {
            "name": "default",
            "cpus_per_node": 2,
            "memory_per_node": "4G",
            "gpu_model": "H100",
            "gpus_per_node": 2,
            "price_eur_gpu_hour": 2.0,
            "price_eur_cpu_hour": 0.01,
        }
        pool.update(overrides.pop("pool", {}))
        site: dict[str, Any] = {
            "name": name,
            "operator": "test",
            "country": "FR",
            "jurisdiction": "EU",
            "carbon_g_per_kwh": 50,
            "backend": {"kind": "ray", "address": self.address},
            "pools": [pool],
        }
        site.update(overrides)
        return site


def only_loopback() -> bool:
    """Whether this process's network namespace has ``lo`` as its only interface."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def quiet_port(avoid: int = 0) -> int:
    """A free loopback port that Ray will not pick for itself.

    ``conftest.free_port`` gives an ephemeral port; in a fresh namespace the kernel
    hands the same ones out again, and a Ray component binding port 0 took the
    dashboard's port between the check and ``ray start``. Ray's fixed defaults are
    10001-19999 and 52365, so pick between 20000 and the ephemeral range.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randint(20000, max(20001, min(30000, low - 1)))
        if port == avoid:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError("no free port between 20000 and 30000 on 127.0.0.1")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A Ray head on free loopback ports (2 CPUs, 2 fake GPUs, 4 GiB), for the session."""
    from tests.conftest import missing

    if not only_loopback():
        missing(NETNS_HINT)
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as exc:
        missing(f"Ray is not installed ({exc}): pip install -e '.[test]'")
    try:
        dashboard_port = quiet_port()
        gcs_port = quiet_port(avoid=dashboard_port)
    except OSError as exc:
        missing(f"loopback is down in this namespace ({exc}): run `ip link set lo up` first")
    state = Path(tempfile.mkdtemp(prefix="grappe-ray-", dir="/tmp"))  # short: socket paths
    env = {"GRAPPE_RAY_BIN": str(Path(sys.executable).parent / "ray")}
    try:
        up = subprocess.run(
            ["bash", str(DEPLOY / "up.sh"), str(state), str(dashboard_port), str(gcs_port)],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        up = subprocess.CompletedProcess(exc.cmd, 1, str(exc.stdout or ""), "up.sh timed out")
    try:
        if up.returncode != 0:
            missing(f"deploy/dev/ray/up.sh failed: {(up.stdout + up.stderr)[-3000:]}")
        yield RayCluster(address=up.stdout.strip().splitlines()[-1], state=state)
    finally:
        subprocess.run(["bash", str(DEPLOY / "down.sh"), str(state)], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
