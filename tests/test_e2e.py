"""End to end: a real ``grappe up`` in a subprocess, driven by the real ``grappe`` CLI.

Each test starts its own factory (its own ``GRAPPE_HOME``, port and ``factory.yaml``
with a small 2-CPU local site), uses the command line as a user would, and checks what
a user would look at: exit codes, output, ``--json`` views, logs and usage. The server
and its CLI are ``tests/fixtures_e2e.py``; the control plane killed and restarted, or
refusing to start, is ``tests/test_e2e_restart.py``.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, local_site
from tests.fixtures_e2e import (
    ACTIVE,
    CLI_TIMEOUT_S,
    GRAPPE,
    REPO,
    TERMINAL,
    Server,
    clean_env,
    gated,
    pgrep,
    submitted_id,
    wait_for,
    write_spec,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, bash and pgrep"),
]


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


# ---------------------------------------------------------------------- 7. plan


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


# ---------------------------------------------------------------------- 8. help


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
    env = clean_env()
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


# ---------------------------------------------------------------------- 9. members


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
