"""What the command line shows: consoles, tables, states, problems, and its error guard."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from grappe.cli.client import CliError
from grappe.spec.errors import SpecError

T = TypeVar("T")

# Tables keep their rows on one line when piped (Rich would wrap them at 80 columns).
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
STATE_STYLE = {
    "PENDING": "yellow",
    "SUBMITTED": "cyan",
    "RUNNING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMEOUT": "red",
}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def state_text(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def problem_text(head: str, exc: SpecError) -> str:
    """A heading, then one line per problem: field, the value given, and the fix."""
    lines = [head]
    lines += [
        f"  - {p.field or '(document)'}"
        + ("" if p.value in (None, "") else f" (got {p.value!r})")
        + f": {p.message}"
        for p in exc.problems
    ]
    return "\n".join(lines)


def guard(fn: Any) -> Any:
    try:
        return fn()
    except CliError as exc:
        err.print(exc.message, markup=False, highlight=False)
        raise typer.Exit(exc.code) from None
