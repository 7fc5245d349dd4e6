"""The gateway's pure parts with plain values: replica choice and per-minute key limits."""

from __future__ import annotations

import pytest

from grappe.gateway.errors import GatewayError
from grappe.gateway.limits import RateLimits
from grappe.gateway.router import Replica, Router
from grappe.store.gateway import KeyInfo


def replica(rid: int, jurisdiction: str = "EU", latency: float = 0.05) -> Replica:
    return Replica(
        rid, "m", f"http://r{rid}", None, None, jurisdiction, healthy=True, latency_s=latency
    )


def test_the_least_loaded_replica_weighted_by_latency_is_chosen() -> None:
    router = Router()
    router.sync([replica(1, latency=0.010), replica(2, latency=0.030)])
    first = router.pick("m", None)
    assert first is not None and first.id == 1
    for _ in range(3):  # three requests in flight on the fast one: 4 x 10 ms > 1 x 30 ms
        Router.begin(first)
    assert router.pick("m", None).id == 2  # type: ignore[union-attr]
    assert router.pick("m", None, tried={2}).id == 1  # type: ignore[union-attr]
    assert router.pick("other", None) is None


def test_latency_is_a_moving_average_and_a_failure_takes_a_replica_out() -> None:
    router = Router()
    router.sync([replica(1, latency=0.100), replica(2, latency=0.100)])
    r1 = router.replicas[1]
    Router.begin(r1)
    Router.end(r1, 0.0)
    assert r1.latency_s == pytest.approx(0.080)  # 0.1 + 0.2 * (0 - 0.1)
    assert (r1.outstanding, r1.served) == (0, 1)
    Router.begin(r1)
    Router.end(r1, None, "connection refused")
    assert not r1.healthy and r1.failed == 1 and r1.last_error == "connection refused"
    assert router.pick("m", None).id == 2  # type: ignore[union-attr]
    # A new read of the store keeps what the router learnt.
    router.sync([replica(1), replica(2)])
    assert router.replicas[1] is r1 and r1.served == 1


def test_a_restricted_project_only_sees_replicas_in_its_jurisdiction() -> None:
    router = Router()
    router.sync([replica(1, "US", latency=0.001), replica(2, "EU", latency=0.5)])
    assert router.pick("m", "eu").id == 2  # type: ignore[union-attr]
    assert router.pick("m", "EU", tried={2}) is None
    assert router.pick("m", None).id == 1  # type: ignore[union-attr]


def test_keys_are_held_to_their_requests_and_tokens_per_minute() -> None:
    now = [120.0]
    limits = RateLimits(clock=lambda: now[0])
    key = KeyInfo(1, "k", 1, "demo", rpm=2, tpm=None, token_budget=None, jurisdiction=None)
    limits.admit(key)
    limits.admit(key)
    with pytest.raises(GatewayError) as over:
        limits.admit(key)
    assert (over.value.status, over.value.retry_after) == (429, 60)
    now[0] = 150.0
    with pytest.raises(GatewayError) as later:
        limits.admit(key)
    assert later.value.retry_after == 30
    now[0] = 180.0  # a new minute, but the sliding minute still holds both requests
    with pytest.raises(GatewayError) as boundary:
        limits.admit(key)
    assert boundary.value.retry_after == 1
    now[0] = 210.0  # half of the last minute left in the window: one request counts
    limits.admit(key)
    with pytest.raises(GatewayError):
        limits.admit(key)

    tokens = KeyInfo(2, "t", 1, "demo", rpm=None, tpm=100, token_budget=None, jurisdiction=None)
    limits.admit(tokens)
    limits.add_tokens(tokens, 100)
    with pytest.raises(GatewayError) as tpm:
        limits.admit(tokens)
    assert tpm.value.code == "tokens_per_minute_exceeded"
    assert "100 tokens per minute" in tpm.value.message
