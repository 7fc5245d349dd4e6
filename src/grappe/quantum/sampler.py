"""A sampler in the shape of Qiskit's primitives: programs and shots in, counts out.

    from grappe.quantum.sampler import Sampler
    job = Sampler(backend="emulators/aer").run([bell_qasm, ghz_qasm], shots=1000)
    for counts in job.result():
        print(counts)

It talks to the factory's API (``GRAPPE_URL``, ``GRAPPE_TOKEN``, as the CLI does);
each program becomes one quantum task, queued, placed and charged like any job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from grappe.cli.client import Client

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


class SamplerJob:
    """The tasks of one ``Sampler.run``; ``result`` waits for them."""

    def __init__(self, client: Client, task_ids: list[int]) -> None:
        self.client = client
        self.task_ids = task_ids

    def status(self) -> list[str]:
        return [self.client.get(f"/quantum/tasks/{i}")["state"] for i in self.task_ids]

    def result(self, timeout: float = 600, poll: float = 0.5) -> list[dict[str, int]]:
        """The counts of each program, in order; ``RuntimeError`` if one did not succeed."""
        deadline = time.monotonic() + timeout
        views: dict[int, dict[str, Any]] = {}
        while len(views) < len(self.task_ids):
            for task_id in self.task_ids:
                if task_id not in views:
                    view = self.client.get(f"/quantum/tasks/{task_id}", retry_s=60)
                    if view["state"] in TERMINAL:
                        views[task_id] = view
            if len(views) < len(self.task_ids):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tasks {self.task_ids} did not all end in {timeout}s")
                time.sleep(poll)
        failed = [v for v in views.values() if v["state"] != "SUCCEEDED"]
        if failed:
            v = failed[0]
            raise RuntimeError(f"task {v['id']} {v['state']}: {v.get('error') or v['reason']}")
        return [dict(views[i]["counts"]) for i in self.task_ids]


class Sampler:
    """Runs programs (OpenQASM, Pulser JSON, photonic JSON) on the factory's quantum devices."""

    def __init__(
        self,
        backend: str | None = None,
        project: str | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        self.backend = backend
        self.project = project
        self.client = Client(url, token)

    def run(
        self, programs: Sequence[str], shots: int = 1000, format: str | None = None
    ) -> SamplerJob:
        """Queue one task per program; the formats are guessed unless ``format`` is given."""
        ids = []
        for program in programs:
            body = {
                "program": program,
                "shots": shots,
                "format": format,
                "backend": self.backend,
                "project": self.project,
            }
            task = self.client.post(
                "/quantum/tasks",
                {k: v for k, v in body.items() if v is not None},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            ids.append(int(task["id"]))
        return SamplerJob(self.client, ids)
