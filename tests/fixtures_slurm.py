"""A real one-host Slurm cluster for the tests, started by ``deploy/dev/slurm/up.sh``.

The ``slurm`` fixture (session scope) runs the cluster in a temporary state
directory on free loopback ports, and stops it (after cancelling what is left)
at the end of the session. Without Slurm installed, or when the cluster does
not start, tests that use it are skipped locally and fail in CI.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, missing

SCRIPTS = Path(__file__).resolve().parents[1] / "deploy" / "dev" / "slurm"


class SlurmCluster:
    """A running dev cluster: its ``slurm.conf``, environment and controls."""

    def __init__(self, state: Path, conf: Path) -> None:
        self.state = state
        self.conf = conf
        self.env = {"SLURM_CONF": str(conf)}

    def command(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (``squeue``, ``scontrol``…) against this cluster."""
        return subprocess.run(
            list(argv),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _ctld(self, action: str) -> None:
        done = subprocess.run(
            ["bash", str(SCRIPTS / "ctld.sh"), str(self.state), action],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ctld.sh {action} failed: {done.stdout}{done.stderr}")

    def stop_ctld(self) -> None:
        """Stop slurmctld (slurmd and running jobs go on)."""
        self._ctld("stop")

    def start_ctld(self) -> None:
        """Start slurmctld again and wait until it answers."""
        self._ctld("start")

    def site(self, name: str = "hpc", **overrides: Any) -> dict[str, Any]:
        """A ``factory.yaml`` site for this cluster; ``backend`` overrides merge into its keys."""
        site: dict[str, Any] = {
            "name": name,
            "operator": "grappe tests",
            "country": "FR",
            "jurisdiction": "EU",
            "certifications": ["HDS"],
            "carbon_g_per_kwh": 50,
            "backend": {"kind": "slurm", "access": "local", "env": dict(self.env)},
            "pools": [
                {
                    "name": "gpu",
                    "gpu_model": "H100",
                    "nodes": 1,
                    "gpus_per_node": 4,
                    "cpus_per_node": 4,
                    "memory_per_node": "3900M",
                },
                {"name": "cpu", "cpus_per_node": 4, "memory_per_node": "3900M"},
            ],
        }
        backend = overrides.pop("backend", None)
        site.update(copy.deepcopy(overrides))
        if backend:
            site["backend"].update(copy.deepcopy(backend))
        return site

    def cancel_all(self, timeout: float = 20) -> None:
        """Cancel every job of this cluster and wait until none is left running."""
        ids = self.command("squeue", "-h", "-o", "%i").stdout.split()
        if ids:
            self.command("scancel", *ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.command("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(0.2)


def _down(state: Path) -> None:
    subprocess.run(["bash", str(SCRIPTS / "down.sh"), str(state)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A one-host Slurm cluster (partitions ``cpu`` and ``gpu``, 4 CPUs, 4 fake GPUs)."""
    if not shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        missing("Slurm is not installed: apt-get install slurm-wlm munge (make test does this)")
    state = Path(tempfile.mkdtemp(prefix="grappe-slurm-"))
    # Other local accounts (SSH test users acting as members) read slurm.conf too.
    os.chmod(state, 0o755)
    ctld_port, slurmd_port = free_port(), free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    try:
        up = subprocess.run(
            ["bash", str(SCRIPTS / "up.sh"), str(state), str(ctld_port), str(slurmd_port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        up = subprocess.CompletedProcess(exc.cmd, 124, str(exc.stdout or ""), "up.sh timed out")
    if up.returncode != 0:
        _down(state)
        shutil.rmtree(state, ignore_errors=True)
        missing(f"the Slurm dev cluster did not start: {up.stdout[-1500:]}{up.stderr[-3000:]}")
    cluster = SlurmCluster(state, state / "slurm.conf")
    try:
        yield cluster
    finally:
        try:
            cluster.start_ctld()  # a test that stopped it and failed must not leave jobs behind
            cluster.cancel_all()
        finally:
            _down(state)
            shutil.rmtree(state, ignore_errors=True)
