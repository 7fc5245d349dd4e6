"""``grappe data`` end to end: a real ``grappe up`` (seeded catalog) driven by the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from grappe.data.seed import SEEDS, package_dir
from tests import fixtures_e2e
from tests.conftest import missing
from tests.fixtures_e2e import Server, write_spec

start_server = fixtures_e2e.start_server  # the e2e suite's real `grappe up`, killed at teardown

pytestmark = pytest.mark.integration

ROWS = b"site,kwh\nA,12.5\nB,7.25\n"


@pytest.fixture
def up(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(autouse=True)
def _package() -> None:
    if package_dir() is None:
        missing("the vega_datasets package (pip install -e '.[data]') seeds the catalog")


def test_fresh_factory_is_seeded_once_with_open_datasets(up: Server) -> None:
    listed = up.cli_json("data", "ls")
    assert {d["id"] for d in listed} == {s.id for s in SEEDS}
    iowa = next(d for d in listed if d["id"] == "energy/iowa-electricity")
    assert iowa["licence"].startswith("Public domain")
    assert iowa["sensitivity"] == "open" and iowa["latest_version"] == 1
    shipped = (package_dir() or Path()) / "_data" / "iowa-electricity.csv"
    shown = up.cli_json("data", "show", "energy/iowa-electricity")
    (f,) = shown["versions"][0]["files"]
    assert f["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert "Energy Information Administration" in shown["description"]
    energy = up.cli_json("data", "ls", "--sector", "energy")
    assert [d["id"] for d in energy] == ["energy/iowa-electricity"]
    text = up.cli_ok("data", "ls", "--search", "nightingale").stdout
    assert "health/crimean-war-mortality" in text and "energy/" not in text

    up.kill(signal.SIGTERM)
    up.start()  # a second start seeds nothing more
    assert len(up.cli_json("data", "ls")) == len(SEEDS)


def test_request_grant_download_and_job_through_the_cli(up: Server, tmp_path: Path) -> None:
    rows = tmp_path / "readings.csv"
    rows.write_bytes(ROWS)
    up.cli_ok(
        "data",
        "add",
        "energy/meters",
        "--title",
        "Meter readings",
        "--licence",
        "contract",
        "--sensitivity",
        "restricted",
        "--allow-site",
        "local",
    )
    sent = up.cli_json("data", "upload", "energy/meters", str(rows))
    assert sent[0]["version"] == 1 and sent[0]["sha256"] == hashlib.sha256(ROWS).hexdigest()

    member = up.cli_json("users", "create", "dora", "--project", "demo")["token"]
    denied = up.cli("data", "download", "energy/meters", "readings.csv", token=member, cwd=tmp_path)
    assert denied.returncode == 2 and "has no access" in denied.stderr
    asked = up.cli_json(
        "data",
        "request",
        "energy/meters",
        "--project",
        "demo",
        "--purpose",
        "forecast the district's load",
        token=member,
    )
    pending = up.cli_json("data", "requests", "--state", "pending")
    assert [r["id"] for r in pending] == [asked[0]["id"]]
    up.cli_ok("data", "grant", str(asked[0]["id"]), "--expires", "7d")

    got = up.cli_ok(
        "data",
        "download",
        "energy/meters",
        "readings.csv",
        "-o",
        str(tmp_path / "copy.csv"),
        token=member,
    )
    assert (tmp_path / "copy.csv").read_bytes() == ROWS and "sha256" in got.stdout

    spec = write_spec(
        tmp_path / "reader.yaml",
        'cat "$GRAPPE_INPUT_ENERGY_METERS/readings.csv"',
        inputs=["energy/meters"],
    )
    planned = up.cli_ok("plan", str(spec), token=member).stdout
    assert "STAGING" in planned and "best: local/default" in planned
    ran = up.cli_ok("run", str(spec), "--wait", token=member)
    job_id = ran.stderr.split("Submitted job ")[1].split()[0]
    assert ROWS.decode() in up.cli_ok("logs", job_id, token=member).stdout

    up.cli_ok("data", "revoke", str(asked[0]["id"]), "--reason", "contract ended")
    again = up.cli("data", "download", "energy/meters", "readings.csv", token=member, cwd=tmp_path)
    assert again.returncode == 2 and "contract ended" in again.stderr


def test_bad_input_exits_2_with_the_reason(up: Server, tmp_path: Path) -> None:
    unknown = write_spec(tmp_path / "j.yaml", "true", inputs=["energy/nothing-here"])
    res = up.cli("run", str(unknown))
    assert res.returncode == 2 and "inputs[0]" in res.stderr and "no such dataset" in res.stderr

    res = up.cli("data", "download", "energy/iowa-electricity", "../../etc/passwd")
    assert res.returncode == 2 and "may not hold '/'" in res.stderr
    res = up.cli("data", "show", "Energy/../x")
    assert res.returncode == 2 and "sector/name in lower case" in res.stderr

    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"x")
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # root reads anything: make it a directory instead
        secret.unlink()
        secret.mkdir()
    res = up.cli("data", "upload", "energy/iowa-electricity", str(secret))
    assert res.returncode == 2 and str(secret) in res.stderr and "Traceback" not in res.stderr
    res = up.cli("data", "upload", "energy/iowa-electricity", str(tmp_path / "absent.csv"))
    assert res.returncode == 2 and "cannot read it" in res.stderr
    res = up.cli("data", "grant", "999")
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert json.loads(up.cli_ok("data", "requests", "--json").stdout) == []
