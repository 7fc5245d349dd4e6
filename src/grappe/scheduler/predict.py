"""Runtime predictions learned from the jobs that have finished.

Users' requested runtimes are rarely trustworthy (most ask for the maximum), so
the scheduler learns instead: the runtime of a new job is predicted from the
jobs of the same user, else the same group (project, virtual cluster), else the
same shape (number of GPUs, in powers of two), else all jobs seen so far. Each
prediction is a geometric mean (runtimes span seconds to weeks, and one long
job must not swamp many short ones) over the most recent jobs, so that it follows
a user's habits as they change. Nothing here knows any trace: it starts empty.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

# Observations a key needs before its prediction is preferred to a broader key's.
MIN_SEEN = 3
# Weight of the newest observation in the moving mean of log-runtimes.
RECENT_WEIGHT = 0.2


def shape(gpus: int) -> int:
    """The job's shape bucket: 0 for CPU-only, else 1 + floor(log2(GPUs))."""
    return 0 if gpus <= 0 else 1 + int(math.log2(gpus))


@dataclass
class _Mean:
    log_mean: float = 0.0
    seen: int = 0

    def add(self, log_value: float) -> None:
        self.seen += 1
        # A plain mean for the first observations, then a moving one.
        weight = max(1.0 / self.seen, RECENT_WEIGHT)
        self.log_mean += weight * (log_value - self.log_mean)


# Finished runtimes a shape needs before its distribution is used (``aging``), and how
# many of the most recent it keeps.
MIN_SEEN_AGING = 30
KEEP_RUNTIMES = 2000


@dataclass
class _Runtimes:
    """The most recent finished runtimes of one shape, also kept sorted."""

    recent: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def add(self, runtime_s: float) -> None:
        if len(self.recent) == KEEP_RUNTIMES:
            old = self.recent.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, old)]
        self.recent.append(runtime_s)
        bisect.insort(self.ordered, runtime_s)

    def left_s(self, ran_s: float) -> float | None:
        """Mean runtime still to go of the jobs that ran longer than ``ran_s``; ``None``
        when none did."""
        longer = self.ordered[bisect.bisect_right(self.ordered, ran_s) :]
        return sum(longer) / len(longer) - ran_s if longer else None


@dataclass
class RuntimePredictor:
    """Predicts a job's runtime (seconds) from the finished jobs it was told about."""

    means: dict[tuple[str, object], _Mean] = field(default_factory=dict)
    shapes: dict[int | None, _Runtimes] = field(default_factory=dict)

    def _keys(self, user: str | None, group: str | None, gpus: int) -> list[tuple[str, object]]:
        b = shape(gpus)
        keys: list[tuple[str, object]] = []
        if user:
            keys.append(("user", (user, b)))
        if group:
            keys.append(("group", (group, b)))
        keys += [("shape", b), ("all", None)]
        return keys

    def observe(self, user: str | None, group: str | None, gpus: int, runtime_s: float) -> None:
        """Learn from one finished job that ran for ``runtime_s`` seconds."""
        value = math.log(max(runtime_s, 1.0))
        for key in self._keys(user, group, gpus):
            self.means.setdefault(key, _Mean()).add(value)
        for b in (shape(gpus), None):
            self.shapes.setdefault(b, _Runtimes()).add(runtime_s)

    def aging(self, gpus: int, ran_s: float) -> float:
        """What a job of this shape that has run ``ran_s`` seconds is expected to run still,
        relative to what a new one is expected to run (mean residual life over the mean).

        Below 1 where runtimes are light-tailed (a job near its end has less left than a
        new one), above 1 where they are heavy-tailed (a job that ran long will run long).
        Jobs of every shape stand in while too few of this one have ended; 1.0 while too
        few jobs have ended at all; ``inf`` when the job outran them all.
        """
        runtimes = next(
            (
                h
                for h in (self.shapes.get(shape(gpus)), self.shapes.get(None))
                if h is not None and len(h.recent) >= MIN_SEEN_AGING
            ),
            None,
        )
        if runtimes is None:
            return 1.0
        fresh = runtimes.left_s(0.0)
        left = runtimes.left_s(ran_s)
        if left is None:
            return math.inf
        return left / fresh if fresh else 1.0

    def predict(self, user: str | None, group: str | None, gpus: int) -> float:
        """The predicted runtime in seconds; 0.0 while nothing has been learned."""
        for key in self._keys(user, group, gpus):
            mean = self.means.get(key)
            if mean is not None and (mean.seen >= MIN_SEEN or key[0] == "all"):
                return math.exp(mean.log_mean)
        return 0.0
