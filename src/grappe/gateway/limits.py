"""Per-key rate limits, per-project token budgets, and the token ledger's pending charges.

Limits are counted per minute in memory (one API replica's view); the ledger's
charges are added up in memory and written to the store in batches, so a request
never waits on a database write.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from grappe.gateway.errors import GatewayError
from grappe.store import gateway as store_gw
from grappe.store.db import Store
from grappe.store.gateway import KeyInfo


class RateLimits:
    """Requests and tokens per key over a sliding minute; 429 with ``Retry-After`` when over.

    Each key keeps this minute's counts and the last minute's; the last minute weighs by
    the part of it still inside the sliding window. A burst on each side of a minute's
    boundary is therefore counted together, not as two fresh minutes.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # key id -> [minute, requests, tokens, last minute's requests, last minute's tokens]
        self._windows: dict[int, list[float]] = {}

    def _window(self, key_id: int) -> tuple[list[float], float]:
        now = self.clock()
        minute = math.floor(now / 60)
        win = self._windows.get(key_id)
        if win is None or win[0] != minute:
            last = win if win is not None and win[0] == minute - 1 else None
            win = [minute, 0, 0, last[1] if last else 0, last[2] if last else 0]
            self._windows[key_id] = win
        return win, now

    def admit(self, key: KeyInfo) -> None:
        """Count one request, or refuse it if the key is over its RPM or TPM."""
        if key.rpm is None and key.tpm is None:
            return
        win, now = self._window(key.key_id)
        elapsed = now - win[0] * 60
        for limit, this, last, what, code in (
            (key.rpm, win[1], win[3], "requests", "rate_limit_exceeded"),
            (key.tpm, win[2], win[4], "tokens", "tokens_per_minute_exceeded"),
        ):
            if limit is None or this + last * (1 - elapsed / 60) < limit:
                continue
            retry = max(1, math.ceil(_wait(limit, this, last, elapsed)))
            raise GatewayError(
                429,
                f"key {key.name!r} is over its limit of {limit} {what} per minute; "
                f"retry in {retry}s",
                "rate_limit_exceeded",
                code,
                retry_after=retry,
            )
        win[1] += 1

    def add_tokens(self, key: KeyInfo, tokens: int) -> None:
        if key.tpm is not None:
            win, _ = self._window(key.key_id)
            win[2] += tokens


def _wait(limit: float, this: float, last: float, elapsed: float) -> float:
    """Seconds until ``this + last × (share of the last minute still in the window)`` < limit."""
    if this < limit:  # the last minute's share must shrink within this minute
        return 60 * (1 - (limit - this) / last) - elapsed
    # Only when this minute has become the last one, and has shrunk enough.
    return (60 - elapsed) + 60 * (1 - limit / this)


class Ledger:
    """Tokens charged to projects: kept in memory, written to the store every flush."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[tuple[int, str, str], list[int]] = {}
        self._used: dict[int, int] = {}  # project id -> tokens, store + pending
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def used(self, project_id: int) -> int:
        used = self._used.get(project_id)
        if used is None:
            with self.store.session() as s:
                stored = store_gw.tokens_used(s, project_id)
            with self._lock:
                pending = sum(
                    p + c for (pid, _, _), (_, p, c) in self._pending.items() if pid == project_id
                )
                used = self._used.setdefault(project_id, stored + pending)
        return used

    def check_budget(self, key: KeyInfo) -> None:
        if key.token_budget is None:
            return
        used = self.used(key.project_id)
        if used >= key.token_budget:
            raise GatewayError(
                402,
                f"project {key.project!r} has used {used} of its {key.token_budget} tokens; "
                "ask an operator for more (grappe models policy)",
                "insufficient_quota",
                "token_budget_exceeded",
            )

    def charge(self, project_id: int, model: str, prompt: int, completion: int) -> None:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        with self._lock:
            row = self._pending.setdefault((project_id, model, day), [0, 0, 0])
            row[0] += 1
            row[1] += prompt
            row[2] += completion
            if project_id in self._used:
                self._used[project_id] += prompt + completion

    def forget(self, project_id: int) -> None:
        """Read the project's total from the store again (its budget or ledger changed)."""
        self._used.pop(project_id, None)

    def flush(self) -> int:
        """Write the pending charges; returns how many rows were written."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return 0
            try:
                with self.store.session() as s:
                    for (project_id, model, day), (n, prompt, completion) in pending.items():
                        store_gw.add_tokens(s, project_id, model, day, n, prompt, completion)
            except Exception:
                with self._lock:  # keep them for the next flush
                    for k, v in pending.items():
                        row = self._pending.setdefault(k, [0, 0, 0])
                        for i in range(3):
                            row[i] += v[i]
                raise
            return len(pending)
