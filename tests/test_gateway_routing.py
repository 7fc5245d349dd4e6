"""Routing, health, failover, sovereignty, limits and ``grappe serve``, end to end.

Replicas are real HTTP servers in their own processes (``tests/openai_upstream.py``,
standing for vLLM, and the in-process engine launched by ``grappe serve`` as a service
job); a replica dies by SIGKILL, as it would when its node fails.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port
from tests.fixtures_e2e import Server, wait_for
from tests.test_gateway import client, new_key
from tests.tiny_lm import build_tiny_lm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="runs grappe up in a subprocess"),
]

UPSTREAM = Path(__file__).with_name("openai_upstream.py")
HELLO = [{"role": "user", "content": "hello"}]


class Upstream:
    """One test upstream process: an OpenAI-compatible server whose words name it."""

    def __init__(self, name: str, model: str = "m", tokens: int = 8, delay: float = 0.0) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM), "--port", str(self.port), "--name", name]
            + ["--model", model, "--tokens", str(tokens), "--delay", str(delay)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/models", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"upstream {name}", up, timeout=20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    started: list[Upstream] = []

    def start(name: str, **options: object) -> Upstream:
        started.append(Upstream(name, **options))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for u in started:
        u.kill()


@pytest.fixture
def factory(start_server: Callable[..., Server]) -> Server:
    return start_server()


def register(server: Server, up: Upstream, jurisdiction: str = "EU", model: str = "m") -> int:
    data = server.cli_json(
        "models", "deploy", model, "--url", up.url, "--jurisdiction", jurisdiction
    )
    return int(data["replica"]["id"])


def health(server: Server, model: str = "m") -> dict[int, bool]:
    (dep,) = [d for d in server.cli_json("models", "deployments") if d["model"] == model]
    return {r["id"]: r["healthy"] for r in dep["replicas"]}


def wait_health(server: Server, replica: int, healthy: bool, model: str = "m", timeout=20) -> None:
    wait_for(
        f"replica {replica} {'up' if healthy else 'down'}",
        lambda: health(server, model).get(replica) is healthy,
        timeout=timeout,
    )


def who(answer: str) -> str:
    return answer.split()[0].rstrip("0123456789")


def test_the_faster_replica_takes_the_traffic_and_a_dead_one_is_routed_around(
    factory: Server, upstreams: Callable[..., Upstream]
) -> None:
    server = factory
    slow = upstreams("slow", delay=0.02)
    fast = upstreams("fast")
    ids = [register(server, slow), register(server, fast)]
    for rid in ids:
        wait_health(server, rid, True)
    ai = client(server, new_key(server))

    answers = Counter(
        who(ai.chat.completions.create(model="m", messages=HELLO).choices[0].message.content)
        for _ in range(20)
    )
    assert answers["fast"] >= 15, answers  # latency-weighted: the slow one gets the odd request

    fast.kill()  # before the first byte: each request goes to the other replica, no error seen
    after = [ai.completions.create(model="m", prompt="hi").choices[0].text for _ in range(5)]
    assert {who(a) for a in after} == {"slow"}
    wait_health(server, ids[1], False)
    (dep,) = [d for d in server.cli_json("models", "deployments") if d["model"] == "m"]
    (dead,) = [r for r in dep["replicas"] if r["id"] == ids[1]]
    assert dead["url"] == fast.url.removesuffix("/v1") and dead["failed"] >= 1
    assert "failed" in dead["last_error"] or "cannot reach" in dead["last_error"]
    shown = server.cli_ok("models", "deployments").stdout
    assert "down" in shown and "up" in shown

    slow.kill()
    with pytest.raises(openai.InternalServerError) as none_left:
        ai.chat.completions.create(model="m", messages=HELLO)
    assert none_left.value.status_code == 503
    assert "no healthy replica" in none_left.value.message


def test_a_replica_dying_mid_stream_ends_the_stream_cleanly_then_traffic_fails_over(
    factory: Server, upstreams: Callable[..., Upstream]
) -> None:
    server = factory
    dying = upstreams("dying", tokens=40, delay=0.1)
    first = register(server, dying)
    wait_health(server, first, True)
    ai = client(server, new_key(server))

    stream = ai.chat.completions.create(model="m", messages=HELLO, stream=True)
    seen = []
    with pytest.raises(openai.APIError) as cut:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
            if len(seen) == 3:
                dying.kill()
    assert seen[:3] == ["dying0", " dying1", " dying2"]
    assert len(seen) < 40
    assert "incomplete" in cut.value.message  # said, not silently rerouted

    spare = upstreams("spare")
    second = register(server, spare)
    wait_health(server, second, True)
    words = [
        c.choices[0].delta.content
        for c in ai.chat.completions.create(model="m", messages=HELLO, stream=True)
    ]
    assert who("".join(words)) == "spare"
    assert health(server)[first] is False


def test_a_project_restricted_to_a_jurisdiction_is_never_served_outside_it(
    factory: Server, upstreams: Callable[..., Upstream]
) -> None:
    server = factory
    eu = upstreams("eu", delay=0.01)
    us = upstreams("us")
    ids = [register(server, eu, "EU"), register(server, us, "US")]
    for rid in ids:
        wait_health(server, rid, True)
    server.cli_ok("projects", "create", "sovereign")
    server.cli_ok("models", "policy", "sovereign", "--jurisdiction", "eu")
    restricted = client(server, new_key(server, "sovereign"))
    anywhere = client(server, new_key(server, "demo"))

    served = {
        who(restricted.completions.create(model="m", prompt="x").choices[0].text) for _ in range(12)
    }
    assert served == {"eu"}
    assert "us" in {
        who(anywhere.completions.create(model="m", prompt="x").choices[0].text) for _ in range(12)
    }

    eu.kill()
    with pytest.raises(openai.InternalServerError) as refused:
        restricted.completions.create(model="m", prompt="x")
    assert refused.value.status_code == 503 and "jurisdiction EU" in refused.value.message
    assert who(anywhere.completions.create(model="m", prompt="x").choices[0].text) == "us"


def test_rate_limits_and_token_budgets_hold(
    factory: Server, upstreams: Callable[..., Upstream]
) -> None:
    server = factory
    up = upstreams("up")
    wait_health(server, register(server, up), True)

    per_minute = client(server, new_key(server, "demo", "--rpm", "3"))
    for _ in range(3):
        per_minute.completions.create(model="m", prompt="x")
    with pytest.raises(openai.RateLimitError) as rpm:
        per_minute.completions.create(model="m", prompt="x")
    assert 1 <= int(rpm.value.response.headers["Retry-After"]) <= 60
    assert "3 requests per minute" in rpm.value.message

    tokens = client(server, new_key(server, "demo", "--tpm", "20"))
    tokens.completions.create(model="m", prompt="x")  # 7 + 8 tokens
    tokens.completions.create(model="m", prompt="x")  # admitted at 15 of 20, now 30
    with pytest.raises(openai.RateLimitError) as tpm:
        tokens.completions.create(model="m", prompt="x")
    assert tpm.value.code == "tokens_per_minute_exceeded"
    assert "Retry-After" in tpm.value.response.headers

    server.cli_ok("projects", "create", "small")
    server.cli_ok("models", "policy", "small", "--tokens", "35")
    budget = client(server, new_key(server, "small"))
    budget.completions.create(model="m", prompt="x")  # 15 tokens, as the upstream reports
    streamed = list(budget.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert len(streamed) == 8
    # No usage in that stream: its 8 words counted, "hello" estimated by a tokenizer.
    wait_for("the stream's tokens charged", lambda: _used(server, "small") >= 24, timeout=10)
    assert _used(server, "small") <= 26
    budget.completions.create(model="m", prompt="x")  # admitted under 35, now over
    with pytest.raises(openai.APIStatusError) as over:
        budget.completions.create(model="m", prompt="x")
    assert over.value.status_code == 402
    assert "small" in over.value.message and "35 tokens" in over.value.message


def _used(server: Server, project: str) -> int:
    (p,) = [p for p in server.cli_json("usage")["projects"] if p["name"] == project]
    return int(p["used"]["tokens"])


def test_grappe_serve_launches_a_replica_as_a_service_job_and_traffic_shifts_to_it(
    factory: Server, upstreams: Callable[..., Upstream], tmp_path: Path
) -> None:
    server = factory
    model_dir = build_tiny_lm(tmp_path / "tiny")
    old = upstreams("old", model="tiny")
    old_id = register(server, old, model="tiny")
    wait_health(server, old_id, True, "tiny")
    ai = client(server, new_key(server))
    assert who(ai.completions.create(model="tiny", prompt="the").choices[0].text) == "old"

    launched = server.cli_json(
        "serve", "tiny", "--site", "local", "--replicas", "1", "--path", str(model_dir)
    )
    (replica,) = launched["replicas"]
    server.wait_job(replica["job_id"], {"RUNNING"})
    wait_health(server, replica["id"], True, "tiny", timeout=120)

    old.kill()  # the operator retires the old server: traffic is the service job's now
    for _ in range(3):
        # A random-weight model may sample its end token first: the answer can be empty, but
        # it is whole (a finish reason) and not the old server's.
        choice = ai.completions.create(model="tiny", prompt="the factory", max_tokens=4).choices[0]
        assert choice.finish_reason in {"length", "stop"} and "old" not in choice.text
    (dep,) = [d for d in server.cli_json("models", "deployments") if d["model"] == "tiny"]
    (served,) = [r for r in dep["replicas"] if r["id"] == replica["id"]]
    assert served["served"] >= 3 and served["job_id"] == replica["job_id"]

    server.cli_ok("cancel", str(replica["job_id"]))  # its job ends: it leaves the rotation
    wait_health(server, replica["id"], False, "tiny")
    with pytest.raises(openai.InternalServerError):
        ai.completions.create(model="tiny", prompt="the")
