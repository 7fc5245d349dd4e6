"""Core figures: placement speed, and one scheduler pass over a deep queue on SQLite.

Run with `make bench`. Prints its figures; asserts nothing about time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.domain.sites import Pool, PoolCapacity, Site, SiteSnapshot
from grappe.placement import place
from grappe.runtime import Factory
from grappe.scheduler.loop import Scheduler
from grappe.scheduler.policies import policy
from grappe.services.auth import bootstrap
from grappe.settings import Settings
from grappe.store import project_repo
from grappe.store.tables import JobRow

MODELS = ["A100", "H100", "H200", "GH200", "B200", "MI300X"]


def federation(
    n_sites: int, free_gpus: Callable[[int, int], int] = lambda i, j: (i * 37) % 800
) -> list[SiteSnapshot]:
    """``n_sites`` sites of 3 pools of 100 nodes of 8 GPUs; ``free_gpus(site, pool)`` free."""
    snaps = []
    for i in range(n_sites):
        pools = tuple(
            Pool(
                f"p{j}",
                nodes=100,
                cpus_per_node=64,
                memory_bytes_per_node=512 << 30,
                gpu_model=MODELS[(i + j) % len(MODELS)],
                gpus_per_node=8,
                price_eur_gpu_hour=1.0 + (i % 5) * 0.5,
            )
            for j in range(3)
        )
        site = Site(
            f"site{i}",
            "op",
            "FR",
            "EU",
            ("ISO27001",) if i % 2 else ("HDS",),
            20.0 + 10 * i,
            "local",
            pools,
        )
        caps = tuple(
            PoolCapacity(
                p.name,
                free_gpus=free_gpus(i, j),
                free_cpus=6400,
                free_memory_bytes=100 << 40,
                pending_gpu_seconds=3600.0 * i,
            )
            for j, p in enumerate(pools)
        )
        snaps.append(SiteSnapshot(site, caps))
    return snaps


def bench_placement() -> None:
    gpus = gpu_models()
    job = JobRequest(
        "1", "p", Resources(gpus=8, gpu_model="H100", cpus=32), 3600, certifications=("HDS",)
    )
    for n in (5, 50, 500):
        snaps = federation(n)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                place(job, snaps, gpus)
            runs.append((time.perf_counter() - t0) / 200)
        print(
            f"place(): {n:4d} sites x 3 pools  median {statistics.median(runs) * 1e3:8.3f} ms/job"
        )


def bench_scheduler_pass(n_jobs: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, database_url=f"sqlite:///{home / 'b.db'}")
        factory = Factory.open(settings)
        bootstrap(factory.store, settings.admin_token_path, 10.0, 100.0)
        now = datetime.now(UTC)
        with factory.store.session() as s:
            demo = project_repo.project_by_name(s, "demo")
            admin = project_repo.user_by_name(s, "admin")
            for i in range(n_jobs):
                # jobs too big to start: the pass places each and writes why it waits
                s.add(
                    JobRow(
                        name=f"j{i}",
                        project_id=demo.id,
                        owner_id=admin.id,
                        spec={"name": f"j{i}", "run": "true", "resources": {"cpus": 10_000}},
                        state="PENDING",
                        reason="queued",
                        cpus=10_000,
                        gpus=0,
                        memory_bytes=0,
                        max_runtime_s=60,
                        submitted_at=now,
                        updated_at=now,
                    )
                )
        sched = Scheduler(factory, policy("grappe"))
        t0 = time.perf_counter()
        sched.tick()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        sched.tick()
        second = time.perf_counter() - t0
        print(
            f"scheduler pass, {n_jobs} pending (SQLite): first {first:.2f} s "
            f"(writes every reason), next {second:.2f} s"
        )
        factory.close()


if __name__ == "__main__":
    bench_placement()
    bench_scheduler_pass(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
