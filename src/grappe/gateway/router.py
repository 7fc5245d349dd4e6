"""Which replica serves a request: the fewest outstanding requests, weighted by latency.

Each replica keeps a count of requests in flight and an exponentially weighted
moving average of its latency; the router picks the healthy replica, in the
project's jurisdiction, whose ``(outstanding + 1) * latency`` is smallest. A replica
that fails leaves the rotation until its next health check passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EWMA_ALPHA = 0.2
START_LATENCY_S = 0.05


@dataclass
class Replica:
    """A replica as the router sees it: where it is, and how it has been doing."""

    id: int
    model: str
    url: str
    upstream_model: str | None
    site: str | None
    jurisdiction: str
    job_id: int | None = None
    healthy: bool = False
    outstanding: int = 0
    latency_s: float = START_LATENCY_S
    served: int = 0
    failed: int = 0
    last_error: str = ""

    def score(self) -> float:
        return (self.outstanding + 1) * self.latency_s


def allowed(replica_jurisdiction: str, wanted: str | None) -> bool:
    """A project restricted to ``wanted`` is served only inside it."""
    return wanted is None or replica_jurisdiction.upper() == wanted.upper()


class Router:
    """The live state of every replica, kept in memory beside the store's rows."""

    def __init__(self) -> None:
        self.replicas: dict[int, Replica] = {}

    def sync(self, rows: Iterable[Replica]) -> None:
        """Take the store's replicas; counters and health already known are kept."""
        fresh: dict[int, Replica] = {}
        for row in rows:
            known = self.replicas.get(row.id)
            if known is not None:
                known.url, known.upstream_model = row.url, row.upstream_model
                known.site, known.jurisdiction, known.job_id = (
                    row.site,
                    row.jurisdiction,
                    row.job_id,
                )
                fresh[row.id] = known
            else:
                fresh[row.id] = row
        self.replicas = fresh

    def of(self, model: str) -> list[Replica]:
        return [r for r in self.replicas.values() if r.model == model]

    def pick(
        self, model: str, jurisdiction: str | None, tried: set[int] | None = None
    ) -> Replica | None:
        """The best healthy replica of ``model`` not yet tried, or ``None``."""
        best: Replica | None = None
        for r in self.replicas.values():
            if r.model != model or not r.healthy or (tried and r.id in tried):
                continue
            if not allowed(r.jurisdiction, jurisdiction):
                continue
            if best is None or r.score() < best.score():
                best = r
        return best

    @staticmethod
    def begin(replica: Replica) -> None:
        replica.outstanding += 1

    @staticmethod
    def end(replica: Replica, latency_s: float | None, error: str | None = None) -> None:
        """One request is over: fold its latency in, or take a failed replica out of rotation."""
        replica.outstanding = max(replica.outstanding - 1, 0)
        if error is not None:
            replica.failed += 1
            replica.healthy = False
            replica.last_error = error
            return
        replica.served += 1
        if latency_s is not None:
            replica.latency_s += EWMA_ALPHA * (latency_s - replica.latency_s)
