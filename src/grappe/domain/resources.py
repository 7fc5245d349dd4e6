"""Resource requests and quantities: GPUs, CPUs, memory, durations.

Pure values with parsers for the forms users write in job specs
(``H100:8``, ``64G``, ``2h30m``). Parsers raise ``ValueError`` with a message
that names the value and the accepted forms; the edges turn it into a 422 or
an exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
# Slurm's forms: MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_CLOCK_RE = re.compile(r"^(\d+):(\d{1,2})(?::(\d{1,2}))?$")
_DAYS_RE = re.compile(r"^(\d+)-(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?$")
_FORMS = "write seconds or units d/h/m/s, e.g. 90, 30m, 2h30m, or Slurm's 1-02:00:00"


def parse_memory(value: str | int) -> int:
    """Return a memory size in bytes from ``64G``, ``512MiB``, ``1.5TB`` or a byte count."""
    if isinstance(value, bool):
        raise ValueError(f"memory {value!r} is not a size; write e.g. 64G or 512M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory {value} is negative; write a size such as 64G")
        return value
    match = _MEMORY_RE.match(str(value))
    if not match or match.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(
            f"memory {value!r} is not a size; write a number with a unit: 512M, 64G, 1T"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _MEMORY_UNITS[unit])


def format_memory(num_bytes: int) -> str:
    """Return a short human form of a byte count (``64G``)."""
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if num_bytes >= size:
            value = num_bytes / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{num_bytes}B"


def parse_duration(value: str | int | float) -> int:
    """Return seconds from ``90``, ``90s``, ``30m``, ``2h30m``, ``1d`` or Slurm's ``1-02:00:00``."""
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration; {_FORMS}")
    if isinstance(value, (int, float)):
        if int(value) <= 0:
            raise ValueError(f"duration {value} must be at least one second; {_FORMS}")
        return int(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return parse_duration(int(text))
    total: float
    if clock := _CLOCK_RE.match(text):
        a, b, c = clock.groups()
        # Slurm reads MM:SS when two fields are given and HH:MM:SS with three.
        hours, minutes, seconds = (0, int(a), int(b)) if c is None else (int(a), int(b), int(c))
        total = hours * 3600 + minutes * 60 + seconds
    elif days := _DAYS_RE.match(text):
        d, h, m, sec = (int(x or 0) for x in days.groups())
        total = d * 86400 + h * 3600 + m * 60 + sec
    else:
        parts = _DURATION_RE.findall(text)
        if not parts or _DURATION_RE.sub("", text).strip():
            raise ValueError(f"duration {value!r} is not a duration; {_FORMS}")
        factor = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        total = sum(float(n) * factor[u] for n, u in parts)
    if int(total) <= 0:
        raise ValueError(f"duration {value!r} must be at least one second; {_FORMS}")
    return int(total)


def format_duration(seconds: float) -> str:
    """Return ``1h02m``-style text for a number of seconds."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@dataclass(frozen=True)
class Resources:
    """What one job asks for, in total across its nodes.

    ``gpu_model`` is ``None`` when any GPU will do. ``gpus``, ``cpus`` and
    ``memory_bytes`` are totals; ``nodes`` says how many hosts they spread over.
    """

    gpus: int = 0
    gpu_model: str | None = None
    cpus: int = 1
    memory_bytes: int = 0
    nodes: int = 1

    def per_node(self) -> Resources:
        """The share of one node, rounding up."""
        n = max(self.nodes, 1)
        return Resources(
            gpus=-(-self.gpus // n),
            gpu_model=self.gpu_model,
            cpus=-(-self.cpus // n),
            memory_bytes=-(-self.memory_bytes // n),
            nodes=1,
        )

    def describe(self) -> str:
        """Short human text: ``8xH100, 32 CPUs, 256G``."""
        parts = []
        if self.gpus:
            parts.append(f"{self.gpus}x{self.gpu_model or 'GPU'}")
        parts.append(f"{self.cpus} CPU" + ("s" if self.cpus != 1 else ""))
        if self.memory_bytes:
            parts.append(format_memory(self.memory_bytes))
        if self.nodes > 1:
            parts.append(f"{self.nodes} nodes")
        return ", ".join(parts)
