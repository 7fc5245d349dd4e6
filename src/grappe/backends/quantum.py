"""The quantum backend: runs quantum tasks on this machine's emulators, one process per attempt.

It is the local backend with another job: each attempt's runner starts
``python -m grappe.quantum.execute`` on the device's emulator (Qiskit Aer,
pulser-simulation, Perceval), which writes ``result.json`` next to the
attempt's other files. So attempts survive a control-plane restart exactly as
local jobs do. Each device is a pool; its ``concurrency`` is the pool's CPUs.

The site also keeps its devices' calendar (``sessions.json``): a session
reserves a device for one project over a time window, and ``capacity`` marks
the device reserved so that placement keeps other projects' tasks waiting.
"""

from __future__ import annotations

import shlex
import sys
import threading
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grappe.backends import local_runner as lr
from grappe.backends.base import Launch, SubmitRejected
from grappe.backends.local import LocalBackend
from grappe.domain.quantum import QuantumSession
from grappe.domain.sites import Site, SiteSnapshot

SESSIONS_FILE = "sessions.json"
# The directory holding the grappe package, so the task imports this very copy.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


class QuantumBackend(LocalBackend):
    """Quantum tasks as detached local runners, one per attempt, on the devices' emulators."""

    def __init__(self, site: Site, root: Path) -> None:
        super().__init__(site, root)
        self._calendar_lock = threading.Lock()

    def submit(self, launch: Launch) -> str:
        """Start the task on its device's emulator; idempotent on ``(job_id, attempt)``."""
        pool = self.site.pool(launch.pool)
        if launch.quantum is None:
            raise SubmitRejected(f"site {self.site.name} runs quantum tasks only")
        if pool is None or pool.device is None:
            raise SubmitRejected(f"site {self.site.name} has no quantum device {launch.pool!r}")
        task = {**launch.quantum, "engine": pool.device.engine}
        run = f'exec {shlex.quote(sys.executable)} -m grappe.quantum.execute "$PWD/.."'
        inner = replace(
            launch,
            run=run,
            setup=None,
            env={"PYTHONPATH": str(_PACKAGE_PARENT)},
            workdir_archive=None,
            quantum=task,
        )
        return super().submit(inner)

    def result(self, handle: str) -> dict[str, Any] | None:
        """The counts and figures an attempt wrote, or ``None`` before it has."""
        attempt_dir = self._attempt_dir(handle)
        return None if attempt_dir is None else lr.read_json(attempt_dir / "result.json")

    def capacity(self) -> SiteSnapshot:
        """Free capacity per device, each marked with the project whose session holds it now."""
        snap = super().capacity()
        if not snap.available:
            return snap
        now = datetime.now(UTC)
        held = {s.device: s.project for s in self.sessions() if s.active(now)}
        if not held:
            return snap
        pools = tuple(replace(c, reserved_for=held.get(c.pool)) for c in snap.pools)
        return replace(snap, pools=pools)

    # -------------------------------------------------------------- sessions

    def sessions(self) -> list[QuantumSession]:
        """Every session on this site's devices, earliest first."""
        data = lr.read_json(self.root / SESSIONS_FILE) or {}
        found = []
        for item in data.get("sessions", []):
            found.append(
                QuantumSession(
                    id=item["id"],
                    project=item["project"],
                    site=self.site.name,
                    device=item["device"],
                    starts=datetime.fromisoformat(item["starts"]),
                    ends=datetime.fromisoformat(item["ends"]),
                )
            )
        return sorted(found, key=lambda s: (s.starts, s.device))

    def reserve(
        self, project: str, device: str, starts: datetime, ends: datetime
    ) -> QuantumSession:
        """Reserve ``device`` for ``project``; ``ValueError`` names a clash or a bad window."""
        pool = self.site.pool(device)
        if pool is None or pool.device is None:
            names = ", ".join(p.name for p in self.site.pools)
            raise ValueError(f"site {self.site.name} has no device {device!r} ({names})")
        if ends <= starts:
            raise ValueError(f"the session ends ({ends:%Y-%m-%d %H:%M}) before it starts")
        with self._calendar_lock:
            current = self.sessions()
            for other in current:
                if other.device == device and other.overlaps(starts, ends):
                    raise ValueError(
                        f"device {device} is reserved for project {other.project} from "
                        f"{other.starts:%Y-%m-%d %H:%M} to {other.ends:%Y-%m-%d %H:%M} UTC; "
                        "pick another window"
                    )
            new = QuantumSession(
                uuid.uuid4().hex[:10], project, self.site.name, device, starts, ends
            )
            rows = [
                {**asdict(s), "starts": s.starts.isoformat(), "ends": s.ends.isoformat()}
                for s in [*current, new]
            ]
            lr.write_json_atomic(self.root / SESSIONS_FILE, {"sessions": rows})
        return new
