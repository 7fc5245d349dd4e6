"""Trace replay benchmark: a trace at load 0.9 under every policy, with a report.

Run with `make bench` (TRACE=..., FED=..., LOAD=... override the inputs). Prints the
figures, the wall and CPU time of each replay, and writes bench/results/sim/ (report.md,
the PNG plots, results.json); asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from grappe.domain.sites import Pool, Site
from grappe.scheduler.policies import POLICIES
from grappe.sim.federation import total_gpus
from grappe.sim.metrics import summarise
from grappe.sim.replay import replay
from grappe.sim.report import write_report
from grappe.sim.trace import TraceError, load_trace
from grappe.spec.factory import load_factory

RESULTS = Path(__file__).parent / "results" / "sim"


def philly_like(scale: float = 1.0) -> list[Site]:
    """Philly's 2,490 GPUs: 321 nodes of 2 and 231 of 8 (A100, the reference: runs as recorded).

    ``scale`` keeps that shape with fewer nodes (at least one of each), for traces too short
    to fill the whole site at the load asked.
    """
    pools = (
        Pool("two", max(1, round(321 * scale)), 16, 64 << 30, "A100", 2),
        Pool("eight", max(1, round(231 * scale)), 48, 256 << 30, "A100", 8),
    )
    return [Site("philly", "msr", "US", "US", (), 400.0, "local", pools)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trace", default="../shared/traces/philly_2017.csv")
    parser.add_argument("--fed", default="", help="factory.yaml; empty: a Philly-like site")
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="nodes of the Philly-like site, as a fraction"
    )
    parser.add_argument("--policy", default=",".join(POLICIES))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        jobs = load_trace(Path(args.trace))
    except TraceError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.limit:
        jobs = jobs[: args.limit]
    fed = Path(args.fed) if args.fed else None
    sites = load_factory(fed).to_domain() if fed and fed.exists() else philly_like(args.scale)
    where = str(fed) if fed and fed.exists() else "inline Philly-like site"
    if args.scale != 1.0 and where.startswith("inline"):
        where += f" at scale {args.scale}"
    print(f"{len(jobs)} jobs, {total_gpus(sites)} GPUs ({where}), load {args.load}")
    rows, results = [], []
    for name in args.policy.split(","):
        cpu = time.process_time()
        result = replay(jobs, sites, name, args.load)
        row = summarise(result)
        row["cpu_s"] = time.process_time() - cpu
        row["federation"] = where
        rows.append(row)
        results.append(result)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    title = f"Replay of {Path(args.trace).name}: {len(jobs)} jobs, load {args.load}, {where}"
    write_report(results, rows, args.out, title)
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
