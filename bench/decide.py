"""Micro-benchmark: scheduling decisions with 10,000 pending jobs across 50 sites.

One pass of ``decide()`` (the function the live loop and trace replay run) over
10,000 pending GPU jobs on 50 sites of 3 pools, some with free GPUs. Prints the
pass time and the p50/p99 time of each job's decision (its placement and the
start or wait that follows). Run with `make bench`; asserts nothing about time.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from core import MODELS, federation  # bench/ is on the path when run as a script

import grappe.scheduler.decide as decide_module
from grappe.catalog import gpu_models
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources
from grappe.scheduler.decide import Entry, decide
from grappe.scheduler.policies import POLICIES, QueuedJob, policy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entries(n: int) -> list[Entry]:
    out = []
    for k in range(n):
        model = MODELS[k % len(MODELS)] if k % 4 else None
        req = JobRequest(
            str(k),
            f"team{k % 20}",
            Resources(gpus=[1, 2, 4, 8][k % 4], gpu_model=model, cpus=4),
            3600 * (1 + k % 12),
        )
        q = QueuedJob(k, T0 + timedelta(seconds=k), f"team{k % 20}", 0, (k % 20) / 20)
        out.append(Entry(q, req))
    return out


def main() -> None:
    # A third of the pools have a free node, a third two, a third none.
    snaps = {s.site.name: s for s in federation(50, free_gpus=lambda i, j: 8 * ((i + j) % 3))}
    queue = entries(10_000)
    timings: list[float] = []
    real_place = decide_module.place

    def timed_place(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return real_place(*args, **kwargs)
        finally:
            timings.append(time.perf_counter() - t0)

    decide_module.place = timed_place  # type: ignore[assignment]
    try:
        for name in POLICIES:
            timings.clear()
            t0 = time.perf_counter()
            result = decide(queue, snaps, policy(name), gpu_models(), lambda e, c, p: True)
            total = time.perf_counter() - t0
            placed = len(timings)
            p50 = statistics.median(timings) * 1e3 if timings else 0.0
            p99 = statistics.quantiles(timings, n=100)[98] * 1e3 if len(timings) > 1 else p50
            print(
                f"decide[{name}]: 10,000 pending x 50 sites: pass {total:.2f} s, "
                f"{placed} placements (p50 {p50:.3f} ms, p99 {p99:.3f} ms), "
                f"{len(result.started)} started, {len(result.waiting)} waiting"
            )
    finally:
        decide_module.place = real_place  # type: ignore[assignment]


if __name__ == "__main__":
    main()
