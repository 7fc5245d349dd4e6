"""``grappe sim``: replay a job trace through the scheduler and compare policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grappe.cli.client import CliError
from grappe.cli.render import JsonOpt, guard, print_json, problem_text, table
from grappe.domain.resources import format_duration
from grappe.spec.errors import SpecError


def sim(
    trace: Annotated[Path, typer.Option("--trace", help="Job trace CSV to replay.")],
    federation: Annotated[
        Path, typer.Option("--federation", help="factory.yaml of the simulated sites.")
    ],
    policies: Annotated[
        str, typer.Option("--policy", help="Policies to compare, comma-separated.")
    ] = "grappe,fifo",
    load: Annotated[
        float | None, typer.Option("--load", help="Rescale arrivals to this offered load.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Replay only the first N jobs.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write report.md with PNG plots (JCT CDF; queue and utilisation over time) "
            "into this folder (needs the sim extra).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a job trace through the scheduler on a virtual clock (no server needed)."""
    from grappe.scheduler.policies import POLICIES
    from grappe.sim.metrics import summarise
    from grappe.sim.replay import replay
    from grappe.sim.trace import TraceError, load_trace
    from grappe.spec.factory import load_factory

    def go() -> None:
        names = [n.strip() for n in policies.split(",") if n.strip()]
        unknown = [n for n in names if n not in POLICIES]
        if unknown or not names:
            raise CliError(
                f"unknown policy {', '.join(unknown) or '(none given)'}; "
                f"use one of {', '.join(POLICIES)}",
                2,
            )
        if load is not None and load <= 0:
            raise CliError(f"--load {load} must be above 0", 2)
        try:
            jobs = load_trace(trace)
        except TraceError as exc:
            raise CliError(str(exc), 2) from None
        if limit is not None:
            jobs = jobs[: max(limit, 0)]
        try:
            sites = load_factory(federation).to_domain()
        except SpecError as exc:
            problem = problem_text(f"{federation}: the federation is not valid", exc)
            raise CliError(problem, 2) from None
        results = [replay(jobs, sites, name, load) for name in names]
        rows = [summarise(r) for r in results]
        if report is not None:
            from grappe.sim.report import ReportError, write_report

            title = f"Replay of {trace.name}: {len(jobs)} jobs" + (
                f" at load {load:g}" if load else ""
            )
            try:
                write_report(results, rows, report, title)
            except ReportError as exc:
                raise CliError(str(exc), 2) from None
        if as_json:
            print_json(rows)
            return
        table(
            f"{len(jobs)} jobs of {trace.name}" + (f" at load {load:g}" if load else ""),
            [
                "POLICY",
                "JOBS",
                "AVG JCT",
                "P50 JCT",
                "P99 JCT",
                "AVG WAIT",
                "P99 WAIT",
                "MAKESPAN",
                "UTIL",
                "JAIN",
                "VIOL",
                "WALL S",
                "STARTS/S",
            ],
            [
                [
                    r["policy"],
                    r["jobs"],
                    *(
                        format_duration(int(r[k]))
                        for k in (
                            "avg_jct_s",
                            "p50_jct_s",
                            "p99_jct_s",
                            "avg_wait_s",
                            "p99_wait_s",
                            "makespan_s",
                        )
                    ),
                    f"{r['utilization']:.1%}",
                    f"{r['jain_fairness']:.3f}",
                    r["violations"],
                    f"{r['wall_s']:.1f}",
                    f"{r['decisions_per_s']:.0f}",
                ]
                for r in rows
            ],
        )

    guard(go)
