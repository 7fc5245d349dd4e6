"""Charts drawn on the server as SVG: no script, readable without JavaScript, printable.

One kind is enough for the console: horizontal bars, each a quantity used
against what was granted (an allocation) or against the largest of the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

ROW_H = 28
LABEL_W = 170
BAR_W = 360
TEXT_W = 210


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    limit: float | None = None  # what was granted; None: scale against the largest value


def _number(x: float) -> str:
    """Small quantities keep three significant digits (0.000912 h), large ones none."""
    if x == 0:
        return "0"
    if abs(x) < 1:
        return f"{x:.3g}"
    return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"


def bars(title: str, rows: Sequence[Bar], unit: str, empty: str = "") -> Markup:
    """An SVG chart of ``rows``; a bar over its limit is drawn full and marked as over."""
    if not rows:
        return Markup('<p class="muted">{}</p>').format(empty)
    top = max([r.limit or 0.0 for r in rows] + [r.value for r in rows] + [1e-9])
    height = ROW_H * len(rows) + 30
    width = LABEL_W + BAR_W + TEXT_W
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i, row in enumerate(rows):
        y = 26 + i * ROW_H
        scale = row.limit if row.limit else top
        share = row.value / scale if scale > 0 else (1.0 if row.value > 0 else 0.0)
        fill = BAR_W * min(share, 1.0)
        kind = "over" if row.limit is not None and row.value > row.limit else "used"
        limit = f" / {_number(row.limit)}" if row.limit is not None else ""
        percent = f" ({share:.0%})" if row.limit else ""
        parts += [
            f'<text x="0" y="{y + 15}" class="chart-label">{escape(row.label[:24])}</text>',
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{BAR_W}" height="16" class="track"/>',
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{fill:.1f}" height="16" class="{kind}"/>',
            f'<text x="{LABEL_W + BAR_W + 8}" y="{y + 15}" class="chart-value">'
            f"{_number(row.value)}{limit} {escape(unit)}{percent}</text>",
        ]
    parts.append("</svg>")
    return Markup("".join(parts))


HIST_H = 220
HIST_TOP = 34
HIST_BAR_MAX = 56
HIST_MAX_BARS = 64


def histogram(title: str, counts: dict[str, int], empty: str = "") -> Markup:
    """A quantum task's counts as vertical bars, one per outcome, in outcome order.

    Each bar is labelled with its outcome (``|01>``) and its count and share of the
    shots; past ``HIST_MAX_BARS`` outcomes only the most frequent are drawn and the
    title says how many were left out.
    """
    if not counts:
        return Markup('<p class="muted">{}</p>').format(empty)
    shots = sum(counts.values())
    shown = sorted(counts.items(), key=lambda kv: -kv[1])[:HIST_MAX_BARS]
    left_out = len(counts) - len(shown)
    shown.sort(key=lambda kv: kv[0])
    top = max(v for _, v in shown) or 1
    step = max(min(HIST_BAR_MAX, 720 // len(shown)), 12)
    width = max(step * len(shown) + 20, 320)
    height = HIST_H + HIST_TOP + 44
    heading = f"{title} · {shots:,} shots" + (
        f" (+{left_out} outcomes not drawn)" if left_out else ""
    )
    parts = [
        # Drawn at its own size (narrow for few outcomes); CSS shrinks it on small screens.
        f'<svg class="chart histogram" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="{escape(heading)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(heading)}</title>",
        f'<text x="0" y="16" class="chart-title">{escape(heading)}</text>',
    ]
    base = HIST_TOP + HIST_H
    for i, (outcome, count) in enumerate(shown):
        h = HIST_H * count / top
        x = 10 + i * step
        mid = x + step / 2
        share = count / shots if shots else 0.0
        # Bit strings become kets; Fock states (Perceval's "|2,0>") are kets already.
        ket = escape(outcome if outcome.startswith("|") else f"|{outcome}⟩")
        parts += [
            f'<g class="outcome" data-outcome="{escape(outcome)}" data-count="{count}">',
            f"<title>{ket}: {count} ({share:.1%})</title>",
            f'<rect x="{x + 2}" y="{base - h:.1f}" width="{step - 4}" height="{h:.1f}" '
            'class="used"/>',
            f'<text x="{mid:.1f}" y="{base - h - 4:.1f}" class="chart-value" '
            f'text-anchor="middle">{count}</text>',
            f'<text x="{mid:.1f}" y="{base + 16}" class="chart-label" text-anchor="middle">'
            f"{ket}</text>",
            f'<text x="{mid:.1f}" y="{base + 32}" class="chart-label muted" '
            f'text-anchor="middle">{share:.0%}</text>',
            "</g>",
        ]
    parts.append("</svg>")
    return Markup("".join(parts))
