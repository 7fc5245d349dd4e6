"""Load: many clients submitting at once to real `grappe up` processes, every id checked.

Two set-ups: one `grappe up` on SQLite, and two `grappe up` replicas sharing one
PostgreSQL (the clients spread over both). Each submission carries its own
idempotency key; the script reports submissions per second, API latency
(p50/p99), the scheduler's lag (from submission to release to the site, p50/p99),
and the drain time (first submission to last job ended); then it checks, in the
store, that every accepted id is there once, that no job was released twice,
and that every job succeeded.

Run with `make bench-load` (JOBS=10000 CLIENTS=50 by default); it prints the
figures and writes them to bench/results/load.json. PostgreSQL is started in a
temporary folder from the server binaries (as the tests do) unless
``--database-url`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from local_factory import write_local_factory  # bench/ is on the path when run as a script
from sqlalchemy import create_engine, func, select

from grappe.store.tables import JobEventRow, JobRow

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Replica:
    """One `grappe up` process."""

    def __init__(self, home: Path, factory: Path, database_url: str | None, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPPE_")}
        env.update(
            GRAPPE_HOME=str(home),
            GRAPPE_FACTORY=str(factory),
            GRAPPE_SCHEDULER_INTERVAL_S="0.2",
            GRAPPE_SEED_DATASETS="false",
            GRAPPE_DEMO_CPU_HOURS="100000",
            PYTHONPATH=str(REPO / "src"),
        )
        if database_url:
            env["GRAPPE_DATABASE_URL"] = database_url
        self.log = open(home.parent / f"{name}.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grappe.cli.main", "up", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"grappe up did not start; see {self.log.name}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def run(label: str, jobs: int, clients: int, replicas: int, database_url: str | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix="grappe-load-"))
    home = root / "home"
    home.mkdir()
    factory = write_local_factory(root / "factory.yaml", 16, "64G")
    servers = [Replica(home, factory, database_url, f"replica{i}") for i in range(replicas)]
    token = (home / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    accepted: dict[str, int] = {}
    lock = threading.Lock()
    spec = {"name": "load", "run": "true", "max_runtime": "5m", "resources": {"memory": "64M"}}

    def client(n: int) -> None:
        url = servers[n % len(servers)].url
        with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=60) as c:
            for i in range(n, jobs, clients):
                key = f"{n}-{i}-{uuid.uuid4().hex[:6]}"
                while True:
                    start = time.perf_counter()
                    resp = c.post("/jobs", json=spec, headers={"Idempotency-Key": key})
                    took = time.perf_counter() - start
                    if resp.status_code in (200, 201):
                        break
                    time.sleep(0.1)  # a refused submission is retried with its key
                with lock:
                    latencies.append(took)
                    accepted[key] = resp.json()["id"]

    print(f"[{label}] {jobs} submissions from {clients} clients to {replicas} replica(s)…")
    first = time.time()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    submit_s = time.time() - first
    engine = create_engine(database_url or f"sqlite:///{home / 'grappe.db'}")
    try:
        while True:
            with engine.connect() as conn:
                query = select(JobRow.state, func.count()).group_by(JobRow.state)
                states = dict(conn.execute(query).all())
            if sum(n for s, n in states.items() if s in TERMINAL) >= jobs:
                break
            time.sleep(1)
        drain_s = time.time() - first
        with engine.connect() as conn:
            rows = conn.execute(select(JobRow.id, JobRow.state, JobRow.submitted_at)).all()
            released = conn.execute(
                select(JobEventRow.job_id, JobEventRow.at).where(JobEventRow.state == "SUBMITTED")
            ).all()
    finally:
        engine.dispose()
        for s in servers:
            s.stop()
    releases = Counter(r.job_id for r in released)
    first_release = {}
    for r in released:
        first_release.setdefault(r.job_id, r.at)
    lags = [
        (first_release[r.id] - r.submitted_at).total_seconds()
        for r in rows
        if r.id in first_release
    ]
    ids = list(accepted.values())
    result = {
        "setup": label,
        "jobs": jobs,
        "clients": clients,
        "replicas": replicas,
        "submissions_per_s": round(jobs / submit_s, 1),
        "api_p50_ms": round(1000 * pct(latencies, 0.50), 1),
        "api_p99_ms": round(1000 * pct(latencies, 0.99), 1),
        "scheduler_lag_p50_s": round(pct(lags, 0.50), 2),
        "scheduler_lag_p99_s": round(pct(lags, 0.99), 2),
        "drain_s": round(drain_s, 1),
        "ids_accepted": len(ids),
        "ids_distinct": len(set(ids)),
        "jobs_stored": len(rows),
        "lost": len(set(ids) - {r.id for r in rows}),
        "unexpected": len({r.id for r in rows} - set(ids)),
        "released_twice": sum(1 for n in releases.values() if n > 1),
        "not_succeeded": sum(1 for r in rows if r.state != "SUCCEEDED"),
        "api_mean_ms": round(1000 * statistics.fmean(latencies), 1),
    }
    print(json.dumps(result, indent=2))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied first)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args()
    results = []
    if args.store in ("sqlite", "both"):
        results.append(run("sqlite, 1 replica", args.jobs, args.clients, 1, None))
    if args.store in ("postgresql", "both"):
        postgres = None
        url = args.database_url
        if url is None:
            sys.path.insert(0, str(REPO))
            from tests.conftest import Postgres

            postgres = Postgres()
            postgres.start()
            url = postgres.create_database()
        try:
            results.append(run("postgresql, 2 replicas", args.jobs, args.clients, 2, url))
        finally:
            if postgres is not None:
                postgres.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    bad = [r for r in results if r["lost"] or r["unexpected"] or r["released_twice"]]
    bad += [r for r in results if r["ids_distinct"] != r["jobs"] or r["not_succeeded"]]
    print(f"written to {args.out}; {'PROBLEMS: ' + str(bad) if bad else 'nothing lost or doubled'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
