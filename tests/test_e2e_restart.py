"""End to end: the control plane killed with SIGKILL and restarted, or refusing to start.

A real ``grappe up`` (``tests/fixtures_e2e.py``) is killed mid-queue and restarted, on
SQLite and on PostgreSQL: no job is lost or run twice, and a ``grappe run --follow``
or ``--wait`` in progress carries on across the restart. A broken setting makes
``grappe up`` exit 2 naming it. Teardown kills every server and whatever its jobs
left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_ERROR, free_port, local_site, missing, write_factory
from tests.fixtures_e2e import (
    CLI_TIMEOUT_S,
    GRAPPE,
    REPO,
    TERMINAL,
    Server,
    clean_env,
    gated,
    wait_for,
    write_spec,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, bash and pgrep"),
]


# ---------------------------------------------------------------------- kill -9 and restart


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


# ---------------------------------------------------------------------- a broken setting


@pytest.mark.parametrize("broken", ["missing-factory-file", "unreachable-database"])
def test_up_with_a_broken_setting_says_which(broken: str, tmp_path: Path) -> None:
    env = clean_env()
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
