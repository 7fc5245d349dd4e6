"""Job specs typed in the browser: validated as the CLI does, each problem tied to its line.

The YAML editor shows a problem beside the line it is about, so the member
finds ``resources.gpus`` on line 5 without counting. The simple form is turned
into the same YAML, so both ways of submitting are checked by one path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from grappe.spec.errors import Problem, SpecError, load_yaml, validate
from grappe.spec.jobspec import JobSpec

FORM_FIELDS = ("name", "project", "cpus", "gpus", "memory", "max_runtime", "run")


@dataclass
class Checked:
    """A spec's text, what it became, and what is wrong with it (each with its line)."""

    text: str
    spec: JobSpec | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.spec is not None


def line_of(text: str, dotted: str) -> int | None:
    """The line (from 1) where the field ``dotted`` is written, or its nearest parent's."""
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in [p for p in dotted.split(".") if p]:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def check(text: str) -> Checked:
    """Parse and validate ``text`` as a job spec."""
    checked = Checked(text)
    try:
        checked.spec = validate(JobSpec, load_yaml(text, source="spec"), source="spec")
    except SpecError as exc:
        checked.problems = [_with_line(text, p) for p in exc.problems]
    return checked


def _with_line(text: str, problem: Problem) -> dict[str, Any]:
    return {**problem.as_dict(), "line": line_of(text, problem.field) if problem.field else None}


def from_form(form: Any) -> str:
    """The YAML a simple form stands for (empty fields left out, numbers as numbers)."""
    values = {k: str(form.get(k, "")).strip() for k in FORM_FIELDS}
    spec: dict[str, Any] = {"name": values["name"]}
    if values["project"]:
        spec["project"] = values["project"]
    resources: dict[str, Any] = {}
    for key in ("cpus", "gpus", "memory"):
        if values[key]:
            number = values[key].isdigit()
            resources[key] = int(values[key]) if number else values[key]
    if resources:
        spec["resources"] = resources
    run = str(form.get("run", "")).replace("\r\n", "\n").strip()
    spec["run"] = run + "\n" if run else ""
    if values["max_runtime"]:
        spec["max_runtime"] = values["max_runtime"]
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
