"""A replay's report: a Markdown page with the figures of every policy and PNG plots.

Plots: the CDF of job completion times per policy, and the queue length and GPU
utilisation over (virtual) time. Needs matplotlib (the ``sim`` extra); the
figures themselves come from ``metrics.summarise``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grappe.sim.metrics import KEYS
from grappe.sim.records import SimResult

# Points per curve: enough for a smooth plot of a trace of any length.
MAX_POINTS = 2000


class ReportError(RuntimeError):
    """The report cannot be written (matplotlib missing, a folder that cannot be made)."""


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The figures of each policy as a Markdown table with the columns of ``KEYS``."""
    lines = ["| " + " | ".join(KEYS) + " |", "|" + "---|" * len(KEYS)]
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _thin(points: Sequence[tuple[float, ...]]) -> list[tuple[float, ...]]:
    step = max(1, len(points) // MAX_POINTS)
    return list(points[::step])


def _ratios(rows: Sequence[dict[str, Any]]) -> list[str]:
    by = {r["policy"]: r for r in rows}
    ours = by.get("grappe")
    if ours is None:
        return []
    lines = []
    for other in ("fifo", "backfill", "las"):
        base = by.get(other)
        if base and base["avg_jct_s"] > 0:
            ratio = ours["avg_jct_s"] / base["avg_jct_s"]
            lines.append(f"- grappe average JCT is {ratio:.2f}x {other}'s.")
    base = by.get("backfill")
    if base:
        verdict = "no worse than" if ours["p99_wait_s"] <= base["p99_wait_s"] else "worse than"
        lines.append(
            f"- grappe p99 queueing delay {ours['p99_wait_s']:,.0f} s is {verdict} "
            f"backfill's {base['p99_wait_s']:,.0f} s."
        )
    return lines


def write_report(
    results: Sequence[SimResult], rows: Sequence[dict[str, Any]], out: Path, title: str
) -> list[Path]:
    """Write ``report.md``, ``jct_cdf.png`` and ``queue_utilisation.png`` into ``out``.

    ``rows`` are the summaries of ``results`` in the same order. Returns the paths written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError(
            "--report needs matplotlib; install it with: pip install 'grappe[sim]'"
        ) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot make the report folder {out}: {exc.strerror}") from None

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        jct = sorted(r.end_s - r.submit_s for r in result.records if r.end_s is not None)
        if not jct:
            continue
        n = len(jct)
        pts = _thin([(max(v, 1.0), (k + 1) / n) for k, v in enumerate(jct)])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=result.policy)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (s, log scale)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("Job completion time, CDF")
    ax.grid(True, alpha=0.3)
    ax.legend()
    cdf = out / "jct_cdf.png"
    fig.tight_layout()
    fig.savefig(cdf, dpi=110)
    plt.close(fig)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for result in results:
        pts = _thin(result.timeline)
        days = [p[0] / 86400 for p in pts]
        top.plot(days, [p[1] for p in pts], label=result.policy, linewidth=0.8)
        total = max(result.total_gpus, 1)
        bottom.plot(days, [p[2] / total for p in pts], label=result.policy, linewidth=0.8)
    top.set_ylabel("jobs waiting")
    top.set_title("Queue length and GPU utilisation over time")
    top.grid(True, alpha=0.3)
    top.legend()
    bottom.set_ylabel("GPUs busy (fraction)")
    bottom.set_xlabel("virtual time (days)")
    bottom.set_ylim(0, 1.05)
    bottom.grid(True, alpha=0.3)
    over_time = out / "queue_utilisation.png"
    fig.tight_layout()
    fig.savefig(over_time, dpi=110)
    plt.close(fig)

    lines = [f"# {title}", "", markdown_table(rows)]
    lines += [*_ratios(rows), ""]
    lines += [
        "Times are in seconds of virtual time; `wall_s` is the replay's own run time.",
        "Queueing delay counts all the time a job did not run (before it started and",
        "while it was stopped for another job).",
        "",
        "![JCT CDF](jct_cdf.png)",
        "",
        "![Queue length and utilisation](queue_utilisation.png)",
        "",
    ]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return [md, cdf, over_time]
