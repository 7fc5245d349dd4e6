"""A real ``grappe up`` for the end-to-end tests: a subprocess, driven by the real ``grappe`` CLI.

``start_server`` (a fixture; ``conftest.py`` registers this module as a plugin) starts
factories, each with its own ``GRAPPE_HOME``, port and ``factory.yaml`` (a small 2-CPU
local site unless told), on SQLite or on a PostgreSQL database; ``Server`` runs the CLI
against one, as a user would. Teardown kills every server and whatever its jobs left
running. Used by ``tests/test_e2e*.py`` and by the other suites that need a real server
(gateway, faults, hostile input, console, data, quantum).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from grappe.backends import local_runner as lr
from tests.conftest import free_port, local_site, write_factory

REPO = Path(__file__).resolve().parents[1]
GRAPPE = [sys.executable, "-m", "grappe.cli.main"]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
ACTIVE = {"SUBMITTED", "RUNNING"}
CLI_TIMEOUT_S = 60


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(every)


def clean_env() -> dict[str, str]:
    """This process's environment without any GRAPPE_* a developer may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPPE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "250"  # rich tables: no folding of cells in the text we assert on
    return env


def _pids_with(text: str) -> list[int]:
    """Pids of processes (not this one) whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def pgrep(marker: str) -> list[int]:
    """``pgrep -f marker``, as a user would look for a job's processes."""
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Server:
    """One ``grappe up`` subprocess and the CLI pointed at it."""

    def __init__(
        self, root: Path, sites: list[dict[str, Any]] | None, database_url: str | None
    ) -> None:
        self.root = root
        self.home = root / "home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.factory = write_factory(
            root / "factory.yaml", sites or [local_site(cpus=2, memory="4G")]
        )
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -------------------------------------------------------------- the server

    def server_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            GRAPPE_HOME=str(self.home),
            GRAPPE_PORT=str(self.port),
            GRAPPE_FACTORY=str(self.factory),
            GRAPPE_SCHEDULER_INTERVAL_S="0.2",
        )
        if self.database_url:
            env["GRAPPE_DATABASE_URL"] = self.database_url
        return env

    @property
    def log_path(self) -> Path:
        return self.root / f"server-{self.starts}.log"

    def start(self, timeout: float = 30) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*GRAPPE, "up", "--port", str(self.port)],
                cwd=self.root,
                env=self.server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"grappe up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"grappe up did not answer in {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.root.glob("server-*.log"))
        )

    def kill_leftover_jobs(self) -> None:
        """SIGKILL runners and job process groups still alive under this factory's home."""
        sites = self.home / "sites"
        for _ in range(2):  # a runner may start its job between the two passes
            for runner_file in sites.glob("*/*/*/" + lr.RUNNER_FILE):
                runner = lr.read_json(runner_file)
                if runner is not None and lr.runner_alive(runner):
                    lr.signal_process(runner["pid"], signal.SIGKILL)
                lr.kill_orphans(runner)
            for pid in _pids_with(str(sites)):  # runners (and job.sh) named by their path
                lr.signal_process(pid, signal.SIGKILL)
            time.sleep(0.05)

    # -------------------------------------------------------------- clients

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=10,
        )

    def cli_env(self, token: str | None = None) -> dict[str, str]:
        env = clean_env()
        env.update(GRAPPE_URL=self.url, GRAPPE_HOME=str(self.home))
        if token:
            env["GRAPPE_TOKEN"] = token
        return env

    def cli(
        self,
        *args: str,
        token: str | None = None,
        cwd: Path | None = None,
        timeout: float = CLI_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``grappe ARGS`` to completion."""
        return subprocess.run(
            [*GRAPPE, *args],
            cwd=cwd or REPO,
            env=self.cli_env(token),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        res = self.cli(*args, **kwargs)
        assert res.returncode == 0, f"grappe {' '.join(args)} exited {res.returncode}:\n" + (
            f"stdout: {res.stdout}\nstderr: {res.stderr}"
        )
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def cli_json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.cli_ok(*args, "--json", **kwargs).stdout)

    def submit(self, spec: Path, *args: str, **kwargs: Any) -> int:
        """``grappe run SPEC --json``: the new job's id."""
        return int(self.cli_json("run", str(spec), *args, **kwargs)["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        with self.api() as api:
            resp = api.get(f"/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()

    def jobs(self) -> list[dict[str, Any]]:
        with self.api() as api:
            resp = api.get("/jobs", params={"limit": 1000})
        resp.raise_for_status()
        return resp.json()

    def wait_job(self, job_id: int, states: set[str] = TERMINAL, timeout: float = 30) -> dict:
        def reached() -> dict | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(f"job {job_id} to reach {sorted(states)}", reached, timeout)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start_server(sites=None, database_url=None)``: a running factory; killed at teardown."""
    servers: list[Server] = []

    def start(sites: list[dict[str, Any]] | None = None, database_url: str | None = None) -> Server:
        root = tmp_path / f"factory{len(servers)}"
        root.mkdir()
        server = Server(root, sites, database_url)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill(signal.SIGKILL)
        server.kill_leftover_jobs()
        print(f"--- grappe up logs ({server.root}) ---\n{server.log()}")  # shown if it failed


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


def write_spec(path: Path, run: str, **fields: Any) -> Path:
    """A job spec: ``name`` from the file name, project demo, one CPU unless told."""
    spec: dict[str, Any] = {
        "name": path.stem,
        "project": "demo",
        "resources": {"cpus": 1, "memory": "64M"},
        "max_runtime": "5m",
        "run": textwrap.dedent(run),
    }
    spec.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def gated(before: str = "", after: str = "") -> str:
    """A job script that runs ``before``, waits (at most a minute) for ``$GATE``, then ``after``.

    The test opens the gate when it has seen what it wants, so no timing is guessed.
    """
    wait = 'for _ in $(seq 600); do [ -e "$GATE" ] && break; sleep 0.1; done\n'
    return before + wait + after


def submitted_id(stderr: str) -> int:
    found = re.search(r"Submitted job (\d+)", stderr)
    assert found, f"no 'Submitted job N' in: {stderr!r}"
    return int(found.group(1))
