"""Shared fixtures: a real PostgreSQL server, factories on SQLite and PostgreSQL, API clients.

In CI (``CI=true``) a test whose infrastructure is missing fails instead of
skipping, so a green run always means the real parts ran.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from grappe.api.app import create_app
from grappe.runtime import Factory
from grappe.scheduler.loop import Scheduler
from grappe.scheduler.policies import policy
from grappe.services.auth import bootstrap, create_user
from grappe.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Real engines, each started by its own fixture module; fixtures_e2e is a real `grappe up`.
pytest_plugins = [
    "tests.fixtures_slurm",
    "tests.fixtures_ssh",
    "tests.fixtures_ray",
    "tests.fixtures_e2e",
]


def missing(what: str) -> None:
    """Skip locally, fail in CI: a missing piece of real infrastructure."""
    if IN_CI:
        pytest.fail(f"{what} (CI must provide it: see .ci/run and the Makefile)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as the ``postgres`` user."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="grappe-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        os.chmod(self.dir, 0o777)

    def _as_user(self, *cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(
            self._as_user(
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            self._as_user(
                str(self.bin / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            self._as_user(
                str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"
            ),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


POSTGRES_ERROR: list[str] = []


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | None]:
    try:
        pg = Postgres()
        pg.start()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        POSTGRES_ERROR.append(f"{exc} {stderr.decode(errors='replace')[-500:]}")
        yield None
        return
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, postgres: Postgres | None) -> str:
    """Each test using this runs once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'grappe.db'}"
    if postgres is None:
        missing(f"PostgreSQL could not be started: {POSTGRES_ERROR}")
    assert postgres is not None
    return postgres.create_database()


def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Any
) -> tuple[Path, str]:
    """A folder and a store URL for a module's world: SQLite, or a new PostgreSQL database."""
    tmp: Path = tmp_path_factory.mktemp(f"{request.module.__name__}-{request.param}")
    if request.param == "sqlite":
        return tmp, f"sqlite:///{tmp / 'grappe.db'}"
    if postgres is None:
        missing("PostgreSQL could not be started")
    return tmp, postgres.create_database()


def write_factory(path: Path, sites: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"sites": sites}))
    return path


def local_site(name: str = "local", cpus: int = 4, memory: str = "8G", **extra: Any) -> dict:
    """A site run by the local backend, sized as the test needs (fake GPUs are indices)."""
    pool: dict[str, Any] = {"name": "default", "cpus_per_node": cpus, "memory_per_node": memory}
    pool.update(extra.pop("pool", {}))
    site = {
        "name": name,
        "operator": "test",
        "country": "FR",
        "jurisdiction": "EU",
        "carbon_g_per_kwh": 50,
        "backend": {"kind": "local"},
        "pools": [pool],
    }
    site.update(extra)
    return site


class World:
    """A factory with its API client, scheduler and a few members, for one test."""

    def __init__(self, factory: Factory, policy_name: str = "grappe") -> None:
        self.factory = factory
        self.scheduler = Scheduler(factory, policy(policy_name), holder="test-replica")
        self.app = create_app(factory, None)
        self.admin_token = factory.settings.admin_token_path.read_text().strip()
        self.http = TestClient(self.app)

    def client(self, token: str | None = None) -> TestClient:
        c = TestClient(self.app)
        c.headers["Authorization"] = f"Bearer {token or self.admin_token}"
        return c

    def user(self, name: str, project: str | None = "demo", role: str = "member") -> str:
        return create_user(self.factory.store, None, name, role, project)[1]

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.scheduler.tick()

    def run_until(self, job_id: int, states: set[str], timeout: float = 30) -> dict:
        """Tick the scheduler until the job reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        admin = self.client()
        while True:
            self.scheduler.tick()
            job = admin.get(f"/api/v1/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} stuck in {job['state']}: {job['reason']}")
            time.sleep(0.1)


def open_world(
    tmp_path: Path,
    store_url: str,
    sites: list[dict] | None = None,
    policy_name: str = "grappe",
    gpu_hours: float = 10.0,
    cpu_hours: float = 100.0,
    **extra: Any,
) -> World:
    tmp_path.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    settings = Settings(
        home=home,
        database_url=store_url,
        factory=write_factory(tmp_path / "factory.yaml", sites or [local_site()]),
        demo_gpu_hours=gpu_hours,
        demo_cpu_hours=cpu_hours,
        **extra,
    )
    factory = Factory.open(settings)
    bootstrap(factory.store, settings.admin_token_path, gpu_hours, cpu_hours)
    return World(factory, policy_name)


@pytest.fixture
def world(tmp_path: Path, store_url: str) -> Iterator[World]:
    w = open_world(tmp_path, store_url)
    yield w
    w.factory.close()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    w = open_world(tmp_path, f"sqlite:///{tmp_path / 'grappe.db'}")
    yield w
    w.factory.close()
