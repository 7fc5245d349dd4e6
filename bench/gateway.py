"""The models gateway's overhead: added latency over calling the upstream directly, and
how many streamed requests per second one ``grappe up`` sustains.

Starts a fast local OpenAI-compatible upstream (``tests/openai_upstream.py``, 16 words
an answer, no delay) and a ``grappe up`` in front of it, then:

1. one client, streamed chat requests one after another: p50/p99 of the full stream's
   time, direct and through the gateway; the difference is what the gateway adds;
2. ``--clients`` concurrent streaming clients for ``--seconds``: requests per second and
   latency, direct and through the gateway.

Run with ``make bench`` (or ``python bench/gateway.py``). Prints its figures and writes
bench/results/gateway.json; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from local_factory import write_local_factory  # bench/ is on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout}s")


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.post(url, json=BODY, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
        async for _ in resp.content.iter_any():
            pass
    return time.perf_counter() - started


async def sequential(url: str, headers: dict[str, str], n: int) -> list[float]:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm the connections and the gateway's averages
            await one(session, url, headers)
        return [await one(session, url, headers) for _ in range(n)]


async def concurrent(
    url: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[float, list[float], int]:
    times: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                try:
                    times.append(await one(session, url, headers))
                except (aiohttp.ClientError, RuntimeError):
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(times) / elapsed, times, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests")
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up_port, gw_port = free_port(), free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "tests" / "openai_upstream.py")]
                    + ["--port", str(up_port), "--tokens", "16"],
                )
            )
            factory = write_local_factory(Path(tmp) / "factory.yaml", 2, "4G")
            env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPPE_")}
            env.update(GRAPPE_HOME=str(Path(tmp) / "home"), GRAPPE_FACTORY=str(factory))
            env.update(GRAPPE_SEED_DATASETS="false")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "grappe.cli.main", "up", "--port", str(gw_port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            upstream = f"http://127.0.0.1:{up_port}"
            gateway = f"http://127.0.0.1:{gw_port}"
            wait_up(f"{upstream}/v1/models")
            wait_up(f"{gateway}/api/v1/health")
            admin = {
                "Authorization": "Bearer "
                + (Path(tmp) / "home" / "admin.token").read_text().strip()
            }
            api = httpx.Client(base_url=f"{gateway}/api/v1", headers=admin, timeout=30)
            api.post("/models/deployments", json={"model": "m", "url": upstream}).raise_for_status()
            key = api.post("/keys", json={"project": "demo"}).json()["key"]
            auth = {"Authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 30
            while not api.get("/models/deployments").json()[-1]["replicas"][0]["healthy"]:
                if time.monotonic() > deadline:
                    raise SystemExit("the upstream never became healthy")
                time.sleep(0.2)

            direct_url = f"{upstream}/v1/chat/completions"
            gw_url = f"{gateway}/v1/chat/completions"
            d_seq = asyncio.run(sequential(direct_url, {}, args.requests))
            g_seq = asyncio.run(sequential(gw_url, auth, args.requests))
            d_rps, d_times, d_err = asyncio.run(
                concurrent(direct_url, {}, args.clients, args.seconds)
            )
            g_rps, g_times, g_err = asyncio.run(
                concurrent(gw_url, auth, args.clients, args.seconds)
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)

    result = {
        "cpus": os.cpu_count(),
        "sequential": {
            "requests": args.requests,
            "direct_p50_ms": round(pct(d_seq, 50), 3),
            "direct_p99_ms": round(pct(d_seq, 99), 3),
            "gateway_p50_ms": round(pct(g_seq, 50), 3),
            "gateway_p99_ms": round(pct(g_seq, 99), 3),
            "added_p50_ms": round(pct(g_seq, 50) - pct(d_seq, 50), 3),
            "added_p99_ms": round(pct(g_seq, 99) - pct(d_seq, 99), 3),
        },
        "concurrent": {
            "clients": args.clients,
            "seconds": args.seconds,
            "direct_rps": round(d_rps, 1),
            "gateway_rps": round(g_rps, 1),
            "direct_p50_ms": round(pct(d_times, 50), 2),
            "gateway_p50_ms": round(pct(g_times, 50), 2),
            "direct_p99_ms": round(pct(d_times, 99), 2),
            "gateway_p99_ms": round(pct(g_times, 99), 2),
            "errors": d_err + g_err,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    s, c = result["sequential"], result["concurrent"]
    print(f"gateway overhead, one client, {s['requests']} streamed requests of 16 words:")
    print(f"  direct  p50 {s['direct_p50_ms']} ms  p99 {s['direct_p99_ms']} ms")
    print(f"  gateway p50 {s['gateway_p50_ms']} ms  p99 {s['gateway_p99_ms']} ms")
    print(f"  added   p50 {s['added_p50_ms']} ms  p99 {s['added_p99_ms']} ms")
    print(f"{c['clients']} concurrent streaming clients for {c['seconds']:g}s:")
    for who in ("direct", "gateway"):
        rps, p50, p99 = c[f"{who}_rps"], c[f"{who}_p50_ms"], c[f"{who}_p99_ms"]
        print(f"  {who:7} {rps} req/s  p50 {p50} ms  p99 {p99} ms")
    print(f"  errors: {c['errors']}")


if __name__ == "__main__":
    main()
