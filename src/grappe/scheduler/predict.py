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

import math
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


@dataclass
class RuntimePredictor:
    """Predicts a job's runtime (seconds) from the finished jobs it was told about."""

    means: dict[tuple[str, object], _Mean] = field(default_factory=dict)

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

    def predict(self, user: str | None, group: str | None, gpus: int) -> float:
        """The predicted runtime in seconds; 0.0 while nothing has been learned."""
        for key in self._keys(user, group, gpus):
            mean = self.means.get(key)
            if mean is not None and (mean.seen >= MIN_SEEN or key[0] == "all"):
                return math.exp(mean.log_mean)
        return 0.0
