"""Synthetic job traces, to check that a policy's gains are not those of one trace.

Writes CSV traces in the format of ``grappe sim`` (with ``user`` and ``vc`` columns)
under bench/results/traces/. Each has a different shape:

- ``poisson_lognormal``: Poisson arrivals, log-normal runtimes (median 30 min), mostly
  1-GPU jobs; each user has a typical runtime, as in shared research clusters.
- ``bursty_pareto``: arrivals in daily bursts, Pareto (heavy-tailed) runtimes, many
  8- and 16-GPU jobs.
- ``uniform_wide``: steady arrivals, runtimes uniform in 1-4 hours (little to gain from
  short-first ordering), 1, 2, 4 or 8 GPUs. Jobs of 4 and 8 GPUs (two in five) ask 73%
  of the GPU time, as the 8-GPU nodes of the Philly-like site hold 74% of its GPUs: at
  a load of 0.9 no kind of node is asked more than it can give. (Sizes uniform in 1-8
  asked 92% of the GPU time of the nodes of 8, which then queued without end.)

Run: ``python bench/traces.py [--jobs N]``; then replay each with bench/sim.py --trace.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).parent / "results" / "traces"
Row = tuple[float, int, float, str, str]  # submit, gpus, duration, user, vc


def poisson_lognormal(rng: random.Random, n: int) -> list[Row]:
    users = [(f"u{k}", rng.lognormvariate(math.log(1800), 1.2)) for k in range(60)]
    t, rows = 0.0, []
    for _ in range(n):
        t += rng.expovariate(1 / 60)
        user, typical = rng.choice(users)
        gpus = rng.choices([1, 2, 4, 8], [70, 15, 10, 5])[0]
        rows.append(
            (t, gpus, max(10.0, rng.lognormvariate(math.log(typical), 0.6)), user, "v" + user[-1])
        )
    return rows


def bursty_pareto(rng: random.Random, n: int) -> list[Row]:
    t, rows = 0.0, []
    for k in range(n):
        # Mornings bring bursts: short gaps in the first hours of each day.
        hour = (t / 3600) % 24
        t += rng.expovariate(1 / (20 if hour < 6 else 240))
        user = f"u{rng.randrange(30)}"
        gpus = rng.choices([1, 2, 4, 8, 16], [35, 10, 15, 30, 10])[0]
        rows.append((t, gpus, min(300.0 * rng.paretovariate(1.3), 14 * 86400), user, f"v{k % 4}"))
    return rows


def uniform_wide(rng: random.Random, n: int) -> list[Row]:
    rows = []
    for k in range(n):
        user = f"u{rng.randrange(20)}"
        gpus = rng.choices([1, 2, 4, 8], [3, 3, 2, 2])[0]
        rows.append((k * 90.0, gpus, rng.uniform(3600, 4 * 3600), user, f"v{k % 5}"))
    return rows


SHAPES: dict[str, Callable[[random.Random, int], list[Row]]] = {
    "poisson_lognormal": poisson_lognormal,
    "bursty_pareto": bursty_pareto,
    "uniform_wide": uniform_wide,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in SHAPES.items():
        rows = make(random.Random(args.seed), args.jobs)
        path = args.out / f"{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["job_id", "submit_time_s", "num_gpus", "duration_s", "user", "vc"])
            for k, (at, gpus, dur, user, vc) in enumerate(rows):
                w.writerow([f"{name[:3]}-{k}", round(at, 1), gpus, round(dur, 1), user, vc])
        print(path)


if __name__ == "__main__":
    main()
