"""Hostile input: shell in specs, paths that escape, bodies and YAML too big, token guessing.

Each case is what an attacker would send, through the API as they would; the
checks are what an operator would look at: the job's output, the batch script
Slurm ran, whether a marker file appeared, what is on disk and in the store.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from grappe.console.web import SESSION_COOKIE, csrf_for
from grappe.settings import Settings
from grappe.spec.errors import SpecError, load_yaml
from grappe.store.tables import TokenRow
from tests.conftest import World, local_site, open_world
from tests.fixtures_e2e import Server
from tests.fixtures_slurm import SlurmCluster

HELLO = {"name": "hello", "project": "demo", "max_runtime": "2m"}


def tricky(marker: Path) -> str:
    """A value that runs ``touch marker`` wherever it reaches a shell unquoted."""
    return (
        f"a b 'c' \"d\" $(touch {marker}) `touch {marker}` ; touch {marker} ; "
        f"' ; touch {marker} ; ' \" ; touch {marker} ; \" $HOME \\ * \n touch {marker}"
    )


def wait_state(world: World, job_id: int, timeout: float = 60) -> dict[str, Any]:
    return world.run_until(job_id, {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout)


# ------------------------------------------------------------------ shell injection


def test_names_and_env_names_that_carry_shell_are_refused(sqlite_world: World) -> None:
    admin = sqlite_world.client()
    for field, spec in (
        ("name", {**HELLO, "run": "true", "name": "x;touch /tmp/pwned"}),
        ("name", {**HELLO, "run": "true", "name": "$(id)"}),
        ("env", {**HELLO, "run": "true", "env": {"A;touch /tmp/pwned": "1"}}),
        ("env", {**HELLO, "run": "true", "env": {"$(id)": "1"}}),
        ("workdir", {**HELLO, "run": "true", "workdir": "upload:../../etc"}),
        ("workdir", {**HELLO, "run": "true", "workdir": "/etc"}),
    ):
        resp = admin.post("/api/v1/jobs", json=spec)
        assert resp.status_code == 422, (field, resp.text)
        fields = [p["field"] for p in resp.json()["error"]["problems"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    assert admin.get("/api/v1/jobs").json() == []


def test_env_values_reach_a_local_job_as_text(sqlite_world: World, tmp_path: Path) -> None:
    marker = tmp_path / "injected-local"
    value = tricky(marker)
    spec = {
        **HELLO,
        "env": {"TRICKY": value},
        "setup": 'printf "setup<%s>\\n" "$TRICKY"',
        "run": 'printf "run<%s>\\n" "$TRICKY"',
    }
    admin = sqlite_world.client()
    job = admin.post("/api/v1/jobs", json=spec).json()
    assert wait_state(sqlite_world, job["id"])["state"] == "SUCCEEDED"
    out = admin.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert f"setup<{value}>\nrun<{value}>\n" in out
    assert not marker.exists()


@pytest.mark.integration
def test_env_values_reach_a_slurm_job_as_text_and_the_batch_script_quotes_them(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "injected-slurm"
    value = tricky(marker)
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'grappe.db'}", sites=[slurm.site()])
    try:
        admin = world.client()
        spec = {**HELLO, "env": {"TRICKY": value}, "run": 'printf "run<%s>\\n" "$TRICKY"'}
        resp = admin.post("/api/v1/jobs", json=spec)
        assert resp.status_code == 201, resp.text
        job = wait_state(world, resp.json()["id"], timeout=90)
        assert job["state"] == "SUCCEEDED", job
        assert f"run<{value}>\n" in admin.get(f"/api/v1/jobs/{job['id']}/logs").text
        scripts = list(world.factory.settings.site_root("hpc").rglob("job.sh"))
        assert len(scripts) == 1
        script = scripts[0].read_text()
        # The value is one single-quoted word: its quotes closed and reopened, nothing bare.
        line = next(x for x in script.splitlines() if x.startswith("export TRICKY="))
        assert line.startswith("export TRICKY='a b '\"'\"'c'\"'\"' \"d\" $(touch ")
        assert "\n touch" in script  # the newline stays inside the quotes
        assert not marker.exists()
    finally:
        world.factory.close()


# ------------------------------------------------------------------ paths that escape


def _archive(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            if m.isreg():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../outside.txt"),
        _member("inner/../../outside.txt"),
        _member("/etc/cron.d/evil"),
        _member("passwd", tarfile.SYMTYPE, "/etc/passwd"),
        _member("up", tarfile.SYMTYPE, "../../.."),
        _member("hard", tarfile.LNKTYPE, "/etc/shadow"),
        _member("dev", tarfile.CHRTYPE),
    ],
    ids=lambda m: m.name,
)
def test_uploaded_archives_whose_members_escape_are_refused(
    sqlite_world: World, member: tarfile.TarInfo
) -> None:
    resp = sqlite_world.client().post("/api/v1/uploads", content=_archive(member))
    assert resp.status_code == 422, resp.text
    problem = resp.json()["error"]["problems"][0]
    assert problem["value"] == member.name and "stay inside" in problem["message"]
    uploads = sqlite_world.factory.settings.uploads_dir
    assert not list(uploads.iterdir()), "a refused archive was kept"


def test_a_plain_archive_is_taken(sqlite_world: World) -> None:
    body = _archive(_member("src/train.py"), _member("ok", tarfile.SYMTYPE, "src/train.py"))
    resp = sqlite_world.client().post("/api/v1/uploads", content=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_dataset_and_log_paths_cannot_leave_their_folders(sqlite_world: World) -> None:
    admin = sqlite_world.client()
    spec = {"id": "energy/grid", "title": "Grid", "licence": "CC0-1.0"}
    assert admin.post("/api/v1/datasets", json=spec).status_code == 201
    home = sqlite_world.factory.settings.home
    before = {p for p in home.rglob("*")}
    base = "/api/v1/datasets/energy/grid"
    for name in (
        "..%2F..%2Fescaped.txt",
        "%2E%2E/%2E%2E/escaped.txt",
        "a/..%2F..%2F..%2Fescaped.txt",
    ):
        put = admin.put(f"{base}/versions/1/files/{name}", content=b"evil")
        assert put.status_code in (404, 422), (name, put.status_code, put.text)
    assert not [p for p in home.rglob("*escaped*")]
    assert {p for p in home.rglob("*") if p.is_file()} <= {p for p in before if p.is_file()} | {
        p for p in home.rglob("*") if p.is_file() and "grappe.db" in p.name
    }
    for name in ("..%2F..%2Fgrappe.db", "..%2F..%2F..%2Fadmin.token", "%2Fetc%2Fpasswd"):
        got = admin.get(f"{base}/files/{name}")
        assert got.status_code in (404, 422), (name, got.status_code)
        assert "root:" not in got.text and "grp_" not in got.text
    # A job's log is read from where the factory put it; no request names a path.
    for offset in ("-1", "1e30", "../../etc/passwd"):
        resp = admin.get("/api/v1/jobs/1/logs", params={"offset": offset})
        assert resp.status_code in (404, 422), (offset, resp.status_code)


# ------------------------------------------------------------------ big bodies and YAML bombs


def test_a_streamed_body_without_length_is_cut_at_the_limit(tmp_path: Path) -> None:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", max_body_bytes=10_000)
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "x", "run": "'
        for _ in range(1000):
            sent.append(1)
            yield b"y" * 1000
        yield b'"}'

    try:
        resp = world.client().post(
            "/api/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "too_large"
        assert "10000 bytes" in resp.json()["error"]["message"]
        assert world.client().get("/api/v1/jobs").json() == []
        big = world.client().post("/api/v1/jobs", json={**HELLO, "run": "x" * 20_000})
        assert big.status_code == 413
    finally:
        world.factory.close()


BOMBS = {
    "billion laughs": "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(20)
    ),
    "deep nesting": "name: " + "[" * 50_000 + "]" * 50_000,
    "deep block nesting": "name:\n" + "".join(" " * i + "- \n" for i in range(1, 500)),
    "many aliases": "a: &a x\nb: [" + ",".join(["*a"] * 5000) + "]\n",
    "big": "name: x\nrun: " + "y" * 1_100_000,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_yaml_bombs_are_refused_quickly_with_a_reason(name: str) -> None:
    start = time.monotonic()
    with pytest.raises(SpecError) as err:
        load_yaml(BOMBS[name], source="job.yaml")
    assert time.monotonic() - start < 5
    assert re.search(r"too many|deeper than|aliases|bytes", str(err.value)), str(err.value)


def test_the_console_refuses_a_yaml_bomb_as_a_problem(sqlite_world: World) -> None:
    token = sqlite_world.admin_token
    console = sqlite_world.http
    console.cookies.set(SESSION_COOKIE, token)
    start = time.monotonic()
    resp = console.post(
        "/jobs/check", data={"csrf": csrf_for(token), "spec": BOMBS["deep nesting"]}
    )
    assert resp.status_code == 200 and time.monotonic() - start < 10
    assert resp.json()["ok"] is False
    assert "deeper than" in resp.json()["problems"][0]["message"]


# ------------------------------------------------------------------ tokens


def test_tokens_are_stored_only_as_hashes(world: World) -> None:
    tokens = [world.admin_token, world.user("ada"), world.user("olga", None, "operator")]
    tokens.append(world.client(tokens[1]).post("/api/v1/tokens", json={}).json()["token"])
    with world.factory.store.session() as s:
        stored = list(s.scalars(select(TokenRow.token_hash)))
    assert len(stored) == 4
    for value in stored:
        assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert {hashlib.sha256(t.encode()).hexdigest() for t in tokens} == set(stored)
    db_text = (
        Path(world.factory.settings.store_url.removeprefix("sqlite:///")).read_bytes()
        if world.factory.settings.store_url.startswith("sqlite")
        else b""
    )
    for t in tokens:
        assert t.encode() not in db_text
    mode = stat.S_IMODE(os.stat(world.factory.settings.admin_token_path).st_mode)
    assert mode == 0o600


def test_failed_authentications_are_rate_limited(tmp_path: Path) -> None:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", auth_failures_per_minute=5)
    try:
        for i in range(5):
            assert world.client(f"grp_guess{i}").get("/api/v1/jobs").status_code == 401
        blocked = world.client("grp_guess5").get("/api/v1/jobs")
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        # While blocked, even a right guess is not told apart from a wrong one.
        assert world.client().get("/api/v1/jobs").status_code == 429
        # No token at all is no guess: still a plain 401.
        assert world.http.get("/api/v1/jobs").status_code == 401
        # The console's sign-in form counts against the same budget.
        world.http.get("/signin")
        form = {"token": "grp_guess6", "csrf": csrf_for(world.http.cookies["grappe_signin"])}
        assert world.http.post("/signin", data=form).status_code == 429
    finally:
        world.factory.close()


def test_guessing_gateway_keys_is_rate_limited_with_member_tokens(tmp_path: Path) -> None:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", auth_failures_per_minute=5)
    try:
        made = world.client().post("/api/v1/keys", json={"project": "demo"})
        assert made.status_code == 201, made.text
        key = made.json()["key"]

        def models(token: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return world.http.get("/v1/models", headers=headers)

        assert models(key).status_code == 200
        for i in range(5):
            wrong = models(f"{key[:-4]}x{i:03d}")
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        blocked = models(key + "y")
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["error"]["code"] == "rate_limited"  # in OpenAI's shape
        assert blocked.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        # The right key learns nothing while blocked, nor does a member token on the API.
        assert models(key).status_code == 429
        assert world.client().get("/api/v1/jobs").status_code == 429
        # No key at all is no guess: still a plain 401.
        assert models(None).status_code == 401
    finally:
        world.factory.close()


def test_guessing_console_session_cookies_is_rate_limited(tmp_path: Path) -> None:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", auth_failures_per_minute=5)
    try:
        right = world.user("ruth", "demo")

        def overview(cookie: str) -> Any:
            world.http.cookies.set(SESSION_COOKIE, cookie)
            return world.http.get("/", follow_redirects=False)

        assert overview(right).status_code == 200
        for i in range(5):
            wrong = overview(f"grp_guess{i}")
            assert wrong.status_code == 303 and wrong.headers["location"].startswith("/signin")
        # Blocked: the right cookie is sent to sign in like a wrong one, and the API says 429.
        blocked = overview(right)
        assert blocked.status_code == 303 and blocked.headers["location"].startswith("/signin")
        assert world.client(right).get("/api/v1/jobs").status_code == 429
    finally:
        world.factory.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/v1",
        "http://localhost:{port}",
        "http://LOCALHOST.:{port}/v1",
        "http://127.0.0.2:{port}/v1",
        "http://127.1:{port}/v1",
        "http://2130706433:{port}/v1",
        "http://0.0.0.0:{port}/v1",
        "http://[::1]:{port}/v1",
        "http://[::ffff:127.0.0.1]:{port}/v1",
        "ftp://10.0.0.5/v1",
        "file:///etc/passwd",
    ],
)
def test_an_upstream_inside_the_control_plane_is_refused(tmp_path: Path, url: str) -> None:
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    try:
        body = {"model": "loop", "url": url.format(port=world.factory.settings.port)}
        member = world.client(world.user("mallory", "demo"))
        assert member.post("/api/v1/models/deployments", json=body).status_code == 403
        resp = world.client().post("/api/v1/models/deployments", json=body)
        assert resp.status_code == 422, resp.text
        assert "url" in resp.text
        served = world.client().get("/api/v1/models/deployments").json()
        assert "loop" not in [d["model"] for d in served]
    finally:
        world.factory.close()


def test_the_failure_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().auth_failures_per_minute == 30
    monkeypatch.setenv("GRAPPE_AUTH_FAILURES_PER_MINUTE", "7")
    monkeypatch.setenv("GRAPPE_MAX_BODY_BYTES", "4096")
    settings = Settings()
    assert (settings.auth_failures_per_minute, settings.max_body_bytes) == (7, 4096)


# ------------------------------------------------------------------ audit


def test_admin_actions_are_audited_and_grappe_audit_lists_them(
    start_server: Any,
) -> None:
    server: Server = start_server(sites=[local_site(cpus=2, memory="4G")])
    with server.api() as api:
        assert api.post("/projects", json={"name": "lab", "gpu_hours": 3}).status_code == 201
        ada = api.post("/users", json={"name": "ada", "project": "lab"}).json()["token"]
        assert api.post("/projects/lab/allocations", json={"gpu_hours": 9}).status_code == 201
        assert api.post("/tokens", json={"user": "ada"}).status_code == 201
    entries = server.cli_json("audit")
    mine = [(e["actor"], e["action"], e["target"]) for e in entries if e["actor"] == "admin"]
    assert mine[:4] == [
        ("admin", "token.create", "ada"),
        ("admin", "project.allocate", "lab"),
        ("admin", "user.create", "ada"),
        ("admin", "project.create", "lab"),
    ]
    only = server.cli_json("audit", "--action", "user.")
    assert [e["action"] for e in only] == ["user.create"]
    table = server.cli_ok("audit", "--limit", "2").stdout
    assert "token.create" in table and "project.create" not in table
    refused = server.cli("audit", token=ada)
    assert refused.returncode != 0 and "operator" in (refused.stderr + refused.stdout)
    assert "Traceback" not in refused.stderr
