"""Turn parse and validation failures into messages a user can act on.

Every problem names the field (dotted path), the value given, and what to do.
The API returns them as a 422 body; the CLI prints them and exits 2.
"""

from __future__ import annotations

import reprlib
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_SPEC_BYTES = 1_000_000
# A spec nests a few levels and never needs aliases by the thousand: more is an attack.
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 1_000
_TYPE_PARTS = {"str", "int", "float", "bool", "list", "dict", "none"}


@dataclass(frozen=True)
class Problem:
    field: str
    value: Any
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.field or "(document)"
        return f"{where}: {self.message}"


class SpecError(Exception):
    """A user's document that cannot be used as it is; ``problems`` say why."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(p) for p in problems))


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 120, 120


def _short(value: Any) -> Any:
    """The value as given when small; a bounded text of it otherwise (never a full repr)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:197] + "..."
    text = _REPR.repr(value)
    return value if len(text) <= 200 and "..." not in text else text[:197] + "..."


def problems_from_validation(error: ValidationError) -> list[Problem]:
    """One ``Problem`` per pydantic error, with fixes for the common kinds."""
    problems = []
    seen: set[str] = set()
    for err in error.errors(include_url=False):
        # pydantic names the member of a union it tried (max_runtime.str, .int); users
        # know only the field, so keep the path up to the union and report it once.
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        parts = [p for p in parts if p not in _TYPE_PARTS and not p.startswith("literal[")]
        loc = ".".join(parts)
        if loc in seen and err["type"] not in ("extra_forbidden", "missing"):
            continue
        seen.add(loc)
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if kind == "extra_forbidden":
            msg = f"unknown field {loc.rsplit('.', 1)[-1]!r}; remove it or check its spelling"
        elif kind == "missing":
            msg = f"{loc or 'a field'} is required; add it"
            value = None
        elif kind == "literal_error":
            msg = f"{value!r} is not allowed; {msg.lower()}"
        elif kind.startswith(("greater_than", "less_than")):
            msg = f"{value!r} is out of range: {msg.lower()}"
        elif kind in ("int_parsing", "int_type", "float_parsing", "float_type"):
            msg = f"{value!r} is not a number; {msg.lower()}"
        elif kind in ("model_type", "dict_type"):
            msg = f"expected a mapping of fields here, got {type(value).__name__}"
        problems.append(Problem(field=loc, value=_short(value), message=msg))
    return problems


def validate(model: type[M], data: Any, source: str = "") -> M:
    """Validate ``data`` as ``model`` or raise ``SpecError``."""
    if not isinstance(data, dict):
        raise SpecError(
            [Problem("", _short(data), "the document must be a mapping of fields (key: value)")],
            source,
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc), source) from None


def load_yaml(text: str, source: str = "") -> Any:
    """Parse YAML safely, refusing oversized documents and alias bombs."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(
            [Problem("", f"{len(text)} bytes", f"the document is over {MAX_SPEC_BYTES} bytes")],
            source,
        )
    try:
        _check_shape(text, source)
        loader = yaml.SafeLoader(text)
        try:
            data = loader.get_single_data()
            # An alias bomb expands a few lines into billions of nodes: refuse many aliases.
            if "*" in text and _node_count(data) > 100_000:
                raise SpecError(
                    [Problem("", "", "the document expands to too many values")], source
                )
            return data
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem("", "", f"not valid YAML: {where}{problem}")], source) from None


def _check_shape(text: str, source: str) -> None:
    """Refuse deep nesting and many aliases from the event stream, before building anything.

    The parser is iterative; building a deeply nested document is recursive and would crash.
    """
    depth = aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise SpecError(
                    [Problem("", "", f"the document nests deeper than {MAX_YAML_DEPTH} levels")],
                    source,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise SpecError(
                    [Problem("", "", f"the document uses more than {MAX_YAML_ALIASES} aliases")],
                    source,
                )


def _node_count(data: Any, limit: int = 100_001) -> int:
    seen = 0
    stack = [data]
    while stack and seen < limit:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen
