"""Projects, their allocations, and the usage charged against them.

An allocation grants a project GPU-hours and CPU-hours for a period (Kueue
would call it a quota). Usage is charged when a job reaches a terminal state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    MEMBER = "member"

    @property
    def staff(self) -> bool:
        """Operators and admins see and manage every project."""
        return self in (Role.ADMIN, Role.OPERATOR)


@dataclass(frozen=True)
class Allocation:
    """GPU-hours and CPU-hours granted to a project for ``[starts, ends)``."""

    gpu_hours: float
    cpu_hours: float
    starts: datetime
    ends: datetime


@dataclass(frozen=True)
class Usage:
    """What a project has consumed in its current allocation period."""

    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    eur: float = 0.0
    kg_co2: float = 0.0
    jobs: int = 0


@dataclass(frozen=True)
class Balance:
    """An allocation next to its usage: what is left, and whether work may start."""

    allocation: Allocation | None
    usage: Usage

    @property
    def gpu_hours_left(self) -> float:
        return (self.allocation.gpu_hours if self.allocation else 0.0) - self.usage.gpu_hours

    @property
    def cpu_hours_left(self) -> float:
        return (self.allocation.cpu_hours if self.allocation else 0.0) - self.usage.cpu_hours

    @property
    def share_used(self) -> float:
        """Fraction of the allocation used, for fair share (0 = untouched)."""
        if not self.allocation:
            return float("inf")
        shares = []
        if self.allocation.gpu_hours > 0:
            shares.append(self.usage.gpu_hours / self.allocation.gpu_hours)
        if self.allocation.cpu_hours > 0:
            shares.append(self.usage.cpu_hours / self.allocation.cpu_hours)
        return max(shares) if shares else float("inf")

    def refusal(self, project: str, gpus: int, now: datetime) -> str | None:
        """Why a job of ``project`` needing ``gpus`` GPUs may not start now, or ``None``."""
        a = self.allocation
        if a is None:
            return (
                f"project {project!r} has no allocation; ask an operator to grant one "
                f"(grappe projects allocate {project} --gpu-hours H)"
            )
        if now < a.starts or now >= a.ends:
            return (
                f"project {project!r} allocation runs from {a.starts:%Y-%m-%d} to "
                f"{a.ends:%Y-%m-%d}, not now; ask an operator for a current allocation"
            )
        if gpus > 0 and self.gpu_hours_left <= 0:
            return (
                f"project {project!r} has used {self.usage.gpu_hours:.2f} of its "
                f"{a.gpu_hours:g} GPU-hours; ask an operator to add more "
                f"(grappe projects allocate {project} --gpu-hours H)"
            )
        if gpus == 0 and self.cpu_hours_left <= 0:
            return (
                f"project {project!r} has used {self.usage.cpu_hours:.2f} of its "
                f"{a.cpu_hours:g} CPU-hours; ask an operator to add more "
                f"(grappe projects allocate {project} --cpu-hours H)"
            )
        return None
