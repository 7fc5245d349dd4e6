"""End to end: a real ``grappe up`` in a subprocess, driven by the real ``grappe`` CLI.

Each test starts its own factory (its own ``GRAPPE_HOME``, port and ``factory.yaml``
with a small 2-CPU local site), uses the command line as a user would, and checks what
a user would look at: exit codes, output, ``--json`` views, logs and usage. The crash
test kills the control plane with SIGKILL mid-queue and restarts it, on SQLite and on
PostgreSQL. Teardown kills every server and whatever its jobs left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from grappe.backends import local_runner as lr
from tests.conftest import POSTGRES_ERROR, free_port, local_site, missing, write_factory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, bash and pgrep"),
]

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


def _clean_env() -> dict[str, str]:
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
        env = _clean_env()
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
        env = _clean_env()
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


# ---------------------------------------------------------------------- 1. make up


def test_make_up_then_hello_runs_logs_and_is_charged(server: Server) -> None:
    token = server.home / "admin.token"
    assert token.is_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert server.admin_token.startswith("grp_")
    assert f"admin token: {token} (new)" in server.log()

    ran = server.cli_ok("run", "examples/hello.yaml", "--wait")
    job_id = submitted_id(ran.stderr)
    assert f"Job {job_id} SUCCEEDED" in ran.stderr

    logs = server.cli_ok("logs", str(job_id))
    assert f"Hello from Grappe job {job_id}" in logs.stdout
    assert "on site local" in logs.stdout

    jobs = server.cli_json("jobs")
    assert [(j["id"], j["state"], j["site"], j["project"]) for j in jobs] == [
        (job_id, "SUCCEEDED", "local", "demo")
    ]
    assert jobs[0]["exit_code"] == 0

    usage = server.cli_json("usage")
    (demo,) = [p for p in usage["projects"] if p["name"] == "demo"]
    assert demo["used"]["cpu_hours"] > 0
    assert demo["used"]["jobs"] == 1
    assert demo["used"]["gpu_hours"] == 0
    (row,) = usage["by_site"]
    assert (row["project"], row["site"], row["jobs"]) == ("demo", "local", 1)
    assert row["cpu_hours"] > 0


# ---------------------------------------------------------------------- 2. bad input


def test_bad_specs_exit_2_naming_field_and_value(server: Server, tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    cases: dict[str, tuple[str, list[str]]] = {
        "gpu-model": (
            "name: x\nproject: demo\nresources: {gpus: 'Z999:2'}\nrun: echo hi\n",
            ["resources.gpus.model", "Z999", "unknown GPU model", "H100"],
        ),
        "negative-cpus": (
            "name: x\nproject: demo\nresources: {cpus: -3}\nrun: echo hi\n",
            ["resources.cpus", "-3", "greater than or equal to 1"],
        ),
        "unknown-field": (
            "name: x\nproject: demo\ncolour: blue\nrun: echo hi\n",
            ["colour", "blue", "unknown field"],
        ),
        "bad-yaml": (
            "name: x\nrun: [echo hi\n  project: : :\n",
            ["not valid YAML", "line 3"],
        ),
        "no-such-project": (
            "name: x\nproject: nosuchproject\nrun: echo hi\n",
            ["project", "nosuchproject", "no such project"],
        ),
        "too-many-cpus": (
            "name: x\nproject: demo\nresources: {cpus: 64}\nrun: echo hi\n",
            ["no site can run this job", "64", "2 CPUs per node"],
        ),
    }
    for name, (text, _) in cases.items():
        (d / f"{name}.yaml").write_text(text)

    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(
            zip(
                cases,
                pool.map(lambda n: server.cli("run", str(d / f"{n}.yaml")), cases),
                strict=True,
            )
        )
    for name, (_, expected) in cases.items():
        res = results[name]
        assert res.returncode == 2, f"{name}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr + res.stdout, f"{name}: {res.stderr}"
        assert res.stdout == "", f"{name} printed on stdout: {res.stdout!r}"
        for text in expected:
            assert text in res.stderr, f"{name}: {text!r} not in stderr:\n{res.stderr}"
    assert server.cli_json("jobs") == [], "a refused spec must not queue a job"

    # The API says the same to a program: 422 with one problem per field.
    with server.api() as api:
        resp = api.post(
            "/jobs", json={"name": "x", "resources": {"cpus": -1}, "bogus": 1, "project": "demo"}
        )
        unauthenticated = httpx.post(f"{server.url}/api/v1/jobs", json={"name": "x"})
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"]["code"] == "invalid"
    fields = {p["field"]: p for p in body["error"]["problems"]}
    assert {"resources.cpus", "bogus", "run"} <= set(fields)
    assert fields["resources.cpus"]["value"] == -1
    assert "unknown field" in fields["bogus"]["message"]
    assert unauthenticated.status_code == 401
    assert "error" in unauthenticated.json()


# ---------------------------------------------------------------------- 3. follow, exit codes


def test_follow_streams_lines_as_printed_and_exit_codes(server: Server, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "three-lines.yaml",
        """\
        echo "line one"
        sleep 1.5
        echo "line two"
        sleep 1.5
        echo "line three"
        """,
    )
    proc = subprocess.Popen(
        [*GRAPPE, "run", str(spec), "--follow"],
        cwd=REPO,
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            seen.append((time.monotonic(), line.decode().rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(CLI_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    exited = time.monotonic()
    reader.join(5)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, stderr
    assert [text for _, text in seen] == ["line one", "line two", "line three"], seen
    # Streamed, not dumped at the end: the first line came while the job still slept.
    first_at, last_at = seen[0][0], seen[-1][0]
    assert last_at - first_at > 1.0, f"lines arrived together: {seen}"
    assert exited - first_at > 1.0
    job_id = submitted_id(stderr)
    assert f"Job {job_id} SUCCEEDED" in stderr

    failing = write_spec(tmp_path / "exits-three.yaml", "echo about to fail\nexit 3\n")
    res = server.cli("run", str(failing), "--wait")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    failed_id = submitted_id(res.stderr)
    assert f"Job {failed_id} FAILED" in res.stderr
    job = server.cli_json("job", str(failed_id))
    assert (job["state"], job["exit_code"]) == ("FAILED", 3)
    assert "exit code 3" in job["reason"]
    assert "about to fail" in server.cli_ok("logs", str(failed_id)).stdout


# ---------------------------------------------------------------------- 4. cancel


def test_cancel_stops_the_whole_process_tree(server: Server, tmp_path: Path) -> None:
    marker = f"grappe-e2e-cancel-{uuid.uuid4().hex}"
    sleeper = f"python3 -c 'import time; time.sleep(300)' {marker}"
    spec = write_spec(tmp_path / "sleeper.yaml", f"echo started\n{sleeper} &\n{sleeper}\n")
    job_id = server.submit(spec)
    server.wait_job(job_id, {"RUNNING"})
    wait_for("both sleepers of the job to run", lambda: len(pgrep(marker)) == 2, timeout=15)

    t0 = time.monotonic()
    res = server.cli_ok("cancel", str(job_id))
    assert f"Job {job_id}" in res.stdout
    job = server.wait_job(job_id, TERMINAL, timeout=15)
    assert job["state"] == "CANCELLED", job
    assert time.monotonic() - t0 < 10, "cancel took too long"
    assert "cancelled by admin" in job["reason"]
    wait_for("no process of the cancelled job", lambda: pgrep(marker) == [], timeout=5)
    # Cancelling it again says why not, without a traceback.
    again = server.cli("cancel", str(job_id))
    assert again.returncode == 2
    assert "already ended" in again.stderr and "Traceback" not in again.stderr


# ---------------------------------------------------------------------- 5. slots


def test_two_cpu_site_runs_two_jobs_and_queues_the_third(server: Server, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    specs = [
        write_spec(tmp_path / f"slot{i}.yaml", gated(after="sleep 0.3\n"), env={"GATE": str(gate)})
        for i in range(3)
    ]
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(server.submit, specs))

    def two_active_one_waiting() -> list[dict] | None:
        jobs = server.cli_json("jobs")
        states = sorted(j["state"] for j in jobs)
        assert len(jobs) == 3 and set(states) <= ACTIVE | {"PENDING"}, states
        assert states.count("PENDING") >= 1, f"more jobs than CPU slots are active: {states}"
        pending = [j for j in jobs if j["state"] == "PENDING"]
        if len(pending) == 1 and "wait" in pending[0]["reason"]:
            return jobs
        return None

    jobs = wait_for("2 active jobs and 1 waiting one", two_active_one_waiting, timeout=20)
    (pending,) = [j for j in jobs if j["state"] == "PENDING"]
    assert "waiting for 1 CPU" in pending["reason"] and "local/default" in pending["reason"]
    # It stays so while the two hold the site's CPUs.
    time.sleep(0.5)
    assert sorted(j["state"] for j in server.jobs()) == ["PENDING", "RUNNING", "RUNNING"]

    gate.touch()
    for job_id in ids:
        assert server.wait_job(job_id, timeout=30)["state"] == "SUCCEEDED"
    listed = server.cli_json("jobs")
    assert {j["state"] for j in listed} == {"SUCCEEDED"} and len(listed) == 3
    # The waiting job started only when a running one had ended.
    first_end = min(j["ended_at"] for j in listed if j["id"] != pending["id"])
    (late,) = [j for j in listed if j["id"] == pending["id"]]
    assert late["started_at"] >= first_end


# ---------------------------------------------------------------------- 6. workdir


def test_workdir_next_to_the_spec_is_uploaded(server: Server, tmp_path: Path) -> None:
    project = tmp_path / "myproject"
    (project / "src" / "nested").mkdir(parents=True)
    content = f"payload {uuid.uuid4().hex}"
    (project / "src" / "data.txt").write_text(content + "\n")
    (project / "src" / "nested" / "more.txt").write_text("nested too\n")
    spec = write_spec(project / "job.yaml", "cat data.txt\ncat nested/more.txt\n", workdir="./src")
    # Run from elsewhere: the workdir is relative to the spec, not to the current directory.
    res = server.cli_ok("run", str(spec), "--wait", cwd=tmp_path)
    job_id = submitted_id(res.stderr)
    logs = server.cli_ok("logs", str(job_id)).stdout
    assert content in logs
    assert "nested too" in logs

    missing_dir = write_spec(tmp_path / "nodir.yaml", "true\n", workdir="./nope")
    res = server.cli("run", str(missing_dir))
    assert res.returncode == 2 and "workdir" in res.stderr and "nope" in res.stderr


# ---------------------------------------------------------------------- 7. crash safety


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_kill_9_of_the_control_plane_loses_and_repeats_nothing(
    store: str, start_server: Callable[..., Server], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = None
    if store == "postgresql":
        postgres = request.getfixturevalue("postgres")
        if postgres is None:
            missing(f"PostgreSQL could not be started: {POSTGRES_ERROR}")
        database_url = postgres.create_database()
    server = start_server(database_url=database_url)
    with httpx.Client() as c:
        assert c.get(f"{server.url}/api/v1/health").json()["store"] == store

    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    gate = tmp_path / "gate"
    spec = write_spec(
        tmp_path / "ledger-job.yaml",
        gated(
            before='echo "$GRAPPE_JOB_ID" >> "$LEDGER"\n',
            after='sleep 0.7\necho "done $GRAPPE_JOB_ID" >> "$LEDGER"\n',
        ),
        env={"LEDGER": str(ledger), "GATE": str(gate)},
    )
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(lambda _: server.submit(spec), range(6)))
    assert len(set(ids)) == 6

    def mid_queue() -> bool:
        states = sorted(j["state"] for j in server.jobs())
        return states == ["PENDING"] * 4 + ["RUNNING"] * 2

    wait_for("2 running jobs and 4 pending ones", mid_queue, timeout=20, every=0.05)
    # Let the running ones go on, and kill the control plane while they do: they end
    # while it is down, and the others are released only after the restart.
    gate.touch()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    time.sleep(1)
    server.start()

    def all_ended() -> list[dict] | None:
        jobs = server.jobs()
        return jobs if all(j["state"] in TERMINAL for j in jobs) else None

    jobs = wait_for("all 6 jobs to end after the restart", all_ended, timeout=60, every=0.2)
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert {j["id"]: j["state"] for j in jobs} == {i: "SUCCEEDED" for i in ids}, server.log()
    assert {j["id"]: j["attempt"] for j in jobs} == {i: 1 for i in ids}

    lines = ledger.read_text().split()
    text = ledger.read_text()
    starts = [ln for ln in text.splitlines() if not ln.startswith("done ")]
    dones = [ln.removeprefix("done ") for ln in text.splitlines() if ln.startswith("done ")]
    assert sorted(starts) == sorted(str(i) for i in ids), f"started: {starts}"
    assert sorted(dones) == sorted(str(i) for i in ids), f"finished: {dones}"
    assert len(lines) == 6 * 3  # "id" and "done id" per job, nothing else

    listed = server.cli_json("jobs")
    assert len(listed) == 6
    table = server.cli_ok("jobs").stdout
    assert sum(1 for ln in table.splitlines() if "SUCCEEDED" in ln) == 6
    # Each job was charged once.
    (row,) = server.cli_json("usage")["by_site"]
    assert row["jobs"] == 6


# ---------------------------------------------------------------------- 8. plan


def test_plan_lists_the_gpu_site_and_rejects_the_cpu_one(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server(
        sites=[
            local_site(
                "gpu-site",
                cpus=2,
                memory="4G",
                pool={"name": "h100", "gpu_model": "H100", "gpus_per_node": 8},
            ),
            local_site("cpu-site", cpus=2, memory="4G"),
        ]
    )
    spec = write_spec(tmp_path / "big-train.yaml", "nvidia-smi\n", resources={"gpus": "H100:8"})
    text = server.cli_ok("plan", str(spec)).stdout
    candidates, _, rejected = text.partition("Rejected")
    assert "Candidates" in candidates
    assert "gpu-site" in candidates and "h100" in candidates and "H100" in candidates
    assert "cpu-site" not in candidates
    (cpu_line,) = [ln for ln in rejected.splitlines() if "cpu-site" in ln]
    assert "has no GPUs" in cpu_line
    assert "best: gpu-site/h100" in text

    plan = server.cli_json("plan", str(spec))
    assert [(c["site"], c["pool"], c["gpu_model"]) for c in plan["candidates"]] == [
        ("gpu-site", "h100", "H100")
    ]
    assert plan["candidates"][0]["can_start_now"] is True
    (rej,) = plan["rejected"]
    assert rej["site"] == "cpu-site" and "has no GPUs" in rej["reason"]
    assert server.cli_json("jobs") == [], "plan must not submit"


# ---------------------------------------------------------------------- 9. help


HELP_COMMANDS = [
    [],
    ["up"],
    ["run"],
    ["plan"],
    ["jobs"],
    ["job"],
    ["logs"],
    ["cancel"],
    ["sites"],
    ["projects"],
    ["projects", "ls"],
    ["projects", "create"],
    ["projects", "allocate"],
    ["projects", "add-member"],
    ["usage"],
    ["users"],
    ["users", "create"],
    ["users", "token"],
    ["whoami"],
]


def test_help_works_for_every_command(tmp_path: Path) -> None:
    env = _clean_env()
    env["GRAPPE_URL"] = f"http://127.0.0.1:{free_port()}"  # --help must not need a factory
    env["GRAPPE_HOME"] = str(tmp_path / "nohome")

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GRAPPE, *args, "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, HELP_COMMANDS))
    for args, res in zip(HELP_COMMANDS, results, strict=True):
        shown = " ".join(["grappe", *args, "--help"])
        assert res.returncode == 0, f"{shown}: exit {res.returncode}\n{res.stderr}"
        assert "Usage:" in res.stdout, f"{shown}: {res.stdout}"
        assert "Traceback" not in res.stderr
    top = results[0].stdout
    for command in ("up", "run", "plan", "jobs", "logs", "cancel", "projects", "usage", "users"):
        assert re.search(rf"\b{command}\b", top), f"{command} missing from grappe --help"
    assert not (tmp_path / "nohome").exists(), "--help must not create GRAPPE_HOME"


# ---------------------------------------------------------------------- 10. members


def test_member_sees_only_their_projects_jobs(server: Server, tmp_path: Path) -> None:
    created = server.cli_ok("users", "create", "ada", "--project", "demo").stdout
    found = re.search(r"token: (grp_\S+)", created)
    assert found, created
    ada = found.group(1)
    me = json.loads(server.cli_ok("whoami", token=ada).stdout)
    assert (me["name"], me["role"], me["projects"]) == ("ada", "member", ["demo"])

    server.cli_ok("projects", "create", "other", "--gpu-hours", "1", "--cpu-hours", "1")
    spec = write_spec(tmp_path / "secret.yaml", "echo secret\n")
    other_id = server.submit(spec, "--project", "other")
    ada_id = server.submit(write_spec(tmp_path / "mine.yaml", "echo mine\n"), token=ada)

    ada_jobs = server.cli_json("jobs", token=ada)
    assert [j["id"] for j in ada_jobs] == [ada_id]
    assert ada_jobs[0]["owner"] == "ada"
    assert other_id not in [j["id"] for j in ada_jobs]
    assert other_id in [j["id"] for j in server.cli_json("jobs")]  # the admin sees both

    shown = server.cli("job", str(other_id), token=ada)
    assert shown.returncode == 2, shown.stderr
    assert "does not exist" in shown.stderr and "Traceback" not in shown.stderr
    assert "secret" not in shown.stdout + shown.stderr

    logs = server.cli("logs", str(other_id), token=ada)
    assert logs.returncode == 2 and "does not exist" in logs.stderr
    cancel = server.cli("cancel", str(other_id), token=ada)
    assert cancel.returncode == 2 and "does not exist" in cancel.stderr
    assert server.job(other_id)["state"] != "CANCELLED"

    # Nor can ada charge a project she is not in.
    refused = server.cli("run", str(spec), "--project", "other", token=ada)
    assert refused.returncode == 2
    assert "other" in refused.stderr and "not a member" in refused.stderr
    assert [p["name"] for p in server.cli_json("projects", "ls", token=ada)] == ["demo"]


# ---------------------------------------------------------------------- bugs found, now fixed


def test_follow_shows_the_output_of_a_retried_attempt(server: Server, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "flaky.yaml",
        """\
        if [ "$GRAPPE_ATTEMPT" = 1 ]; then
          echo "attempt one fails after printing a line longer than the second attempt's"
          sleep 2
          exit 1
        fi
        echo "second ok"
        """,
        retries=1,
    )
    res = server.cli("run", str(spec), "--follow")
    job = server.job(submitted_id(res.stderr))
    assert (job["state"], job["attempt"]) == ("SUCCEEDED", 2)
    assert res.returncode == 0, res.stderr
    assert "attempt one fails" in res.stdout  # streamed while attempt 1 ran
    assert "second ok" in res.stdout, f"the retry's output is missing: {res.stdout!r}"


def test_follow_and_wait_survive_a_control_plane_restart(server: Server, tmp_path: Path) -> None:
    ticks = write_spec(
        tmp_path / "ticks.yaml", 'for i in 1 2 3 4 5 6 7 8; do echo "tick $i"; sleep 0.5; done\n'
    )
    quiet = write_spec(tmp_path / "quiet.yaml", "sleep 3\n")
    followed, waited = (
        subprocess.Popen(
            [*GRAPPE, "run", str(spec), flag],
            cwd=REPO,
            env=server.cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec, flag in ((ticks, "--follow"), (quiet, "--wait"))
    )
    try:

        def streaming() -> bool:
            jobs = server.jobs()
            return len(jobs) == 2 and all(j["state"] == "RUNNING" for j in jobs)

        wait_for("both jobs to run", streaming, timeout=20)
        time.sleep(1)  # a few ticks streamed
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        time.sleep(1)
        server.start()
        f_out, f_err = followed.communicate(timeout=CLI_TIMEOUT_S)
        w_out, w_err = waited.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        for proc in (followed, waited):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for job in server.jobs():  # the jobs themselves are fine
        assert server.wait_job(job["id"])["state"] == "SUCCEEDED"
    assert "Traceback" not in f_err, f_err
    assert "Traceback" not in w_err, w_err
    assert followed.returncode == 0, f_err
    assert f_out.splitlines() == [f"tick {i}" for i in range(1, 9)], f_out
    assert waited.returncode == 0, w_err
    assert "SUCCEEDED" in w_err


@pytest.mark.parametrize("broken", ["missing-factory-file", "unreachable-database"])
def test_up_with_a_broken_setting_says_which(broken: str, tmp_path: Path) -> None:
    env = _clean_env()
    env.update(GRAPPE_HOME=str(tmp_path / "home"), GRAPPE_SCHEDULER_INTERVAL_S="0.2")
    if broken == "missing-factory-file":
        env["GRAPPE_FACTORY"] = str(tmp_path / "no-such-factory.yaml")
        named = "no-such-factory.yaml"
    else:
        env["GRAPPE_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
        env["GRAPPE_FACTORY"] = str(write_factory(tmp_path / "f.yaml", [local_site(cpus=2)]))
        named = "127.0.0.1"
    res = subprocess.run(
        [*GRAPPE, "up", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == 2
    assert named in res.stderr
