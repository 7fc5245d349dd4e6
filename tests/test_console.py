"""The console's HTML routes without a browser: sign-in, permissions, forms, live streams.

A member must see in the console exactly what the API lets them see: never a
job of a project they are not in, never an operator page. Forms need the
session's form token. The browser tests (test_console_browser.py) drive the
same pages through Chromium.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grappe.console import charts, i18n, specs
from grappe.services import projects
from grappe.services.auth import authenticate
from tests.conftest import World, free_port, local_site, open_world

HELLO = "name: hello\nproject: demo\nrun: echo hello-from-console\nmax_runtime: 1m\n"


def form_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in(world: World, token: str, lang: str = "en") -> TestClient:
    """A browser-like client signed in through the sign-in form."""
    client = TestClient(world.app)
    client.cookies.set(i18n.COOKIE, lang)
    page = client.get("/signin")
    resp = client.post(
        "/signin",
        data={"csrf": form_token(page.text), "token": token, "next": "/"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return client


def submit(client: TestClient, spec: str = HELLO) -> int:
    token = form_token(client.get("/jobs/new").text)
    resp = client.post(
        "/jobs/new", data={"csrf": token, "mode": "yaml", "spec": spec}, follow_redirects=False
    )
    assert resp.status_code == 303, resp.text
    return int(resp.headers["location"].rsplit("/", 1)[1])


@pytest.fixture
def two_projects(world: World) -> tuple[World, str, str]:
    """``alice`` in demo, ``bob`` in ``secret``; admin submits one job in each project."""
    alice = world.user("alice", "demo")
    bob = world.user("bob", None)
    admin = authenticate(world.factory.store, world.admin_token)
    projects.create_project(world.factory.store, admin, "secret", 1, 10, members=["bob"])
    return world, alice, bob


def test_pages_need_sign_in(sqlite_world: World) -> None:
    client = TestClient(sqlite_world.app)
    for path in ["/", "/jobs", "/jobs/new", "/plan", "/operator", "/jobs/1", "/overview/sites"]:
        resp = client.get(path, follow_redirects=False)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/signin?next=")
    assert client.get("/jobs?state=RUNNING", follow_redirects=False).headers["location"] == (
        "/signin?next=/jobs%3Fstate%3DRUNNING"
    )
    # The API is untouched: still JSON and bearer tokens.
    assert client.get("/api/v1/jobs").json()["error"]["code"] == "unauthorized"


def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_tokens(
    sqlite_world: World,
) -> None:
    client = TestClient(sqlite_world.app)
    page = client.get("/signin")
    bad = client.post(
        "/signin", data={"csrf": form_token(page.text), "token": "grp_nope", "next": "/"}
    )
    assert bad.status_code == 401
    assert "This token is not valid" in bad.text
    # Without the visit's form token (a form posted from elsewhere) nobody is signed in.
    forged = TestClient(sqlite_world.app).post(
        "/signin", data={"token": sqlite_world.admin_token}, follow_redirects=False
    )
    assert forged.status_code == 303 and "error=expired" in forged.headers["location"]
    assert "grappe_session" not in forged.headers.get("set-cookie", "")
    good = client.post(
        "/signin",
        data={"csrf": form_token(page.text), "token": sqlite_world.admin_token, "next": "/jobs"},
        follow_redirects=False,
    )
    assert good.headers["location"] == "/jobs"
    cookie = good.headers["set-cookie"]
    assert "grappe_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    home = client.get("/")
    assert "Signed in as admin (admin)" in home.text
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    # An outside address in ``next`` never becomes a redirect.
    again = client.get("/signin?next=//evil.example", follow_redirects=False)
    assert again.headers["location"] == "/"


def test_a_member_never_sees_another_projects_job(two_projects: tuple[World, str, str]) -> None:
    world, alice_token, bob_token = two_projects
    bob = sign_in(world, bob_token)
    secret_job = submit(bob, HELLO.replace("project: demo", "project: secret"))
    alice = sign_in(world, alice_token)
    own_job = submit(alice)

    listed = alice.get("/jobs").text
    assert f'data-job="{own_job}"' in listed and f'data-job="{secret_job}"' not in listed
    assert f'data-job="{secret_job}"' not in alice.get("/jobs/rows").text
    assert f'data-job="{secret_job}"' not in alice.get("/").text
    assert f'data-job="{secret_job}"' not in alice.get("/overview/queue").text
    assert f'data-job="{own_job}"' in alice.get("/jobs/rows?mine=true&limit=10").text
    assert 'data-site="local"' in alice.get("/overview/sites").text
    page = alice.get(f"/jobs/{secret_job}")
    assert page.status_code == 404
    assert "belongs to a project you are not in" in page.text
    assert alice.get(f"/jobs/{secret_job}/events").status_code == 404
    assert alice.get("/jobs?project=secret").status_code == 404
    token = form_token(alice.get("/jobs/new").text)
    assert alice.post(f"/jobs/{secret_job}/cancel", data={"csrf": token}).status_code == 404
    # Submitting to a project one is not in is refused in the editor, with the reason.
    refused = alice.post(
        "/jobs/new",
        data={"csrf": token, "mode": "yaml", "spec": HELLO.replace("demo", "secret")},
    )
    assert refused.status_code == 422
    assert "you are not a member of this project" in refused.text
    # bob sees his job; the admin sees both.
    assert f'data-job="{secret_job}"' in bob.get("/jobs").text
    admin_list = sign_in(world, world.admin_token).get("/jobs").text
    assert f'data-job="{secret_job}"' in admin_list and f'data-job="{own_job}"' in admin_list


def test_operator_pages_are_for_operators_only(two_projects: tuple[World, str, str]) -> None:
    world, alice_token, _ = two_projects
    alice = sign_in(world, alice_token)
    assert 'href="/operator"' not in alice.get("/").text
    for path in ["/operator", "/operator/usage", "/operator/usage.csv"]:
        resp = alice.get(path)
        assert resp.status_code == 403, path
        assert "needs the operator or admin role" in resp.text
    token = form_token(alice.get("/").text)
    resp = alice.post(
        "/operator/projects/demo/allocate",
        data={"csrf": token, "gpu_hours": "99", "cpu_hours": "99", "days": "1"},
    )
    assert resp.status_code == 403
    operator = sign_in(world, world.user("olga", None, role="operator"))
    page = operator.get("/operator")
    assert page.status_code == 200 and 'href="/operator"' in page.text
    assert 'data-project="secret"' in page.text and 'data-site="local"' in page.text


def test_forms_need_the_session_token_and_this_origin(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    spec = {"mode": "yaml", "spec": HELLO}
    assert admin.post("/jobs/new", data=spec).status_code == 403
    assert admin.post("/jobs/new", data={**spec, "csrf": "0" * 64}).status_code == 403
    token = form_token(admin.get("/").text)
    other_origin = admin.post(
        "/jobs/new", data={**spec, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert other_origin.status_code == 403
    assert "may not act on this console" in other_origin.text
    assert sqlite_world.client().get("/api/v1/jobs").json() == []


def test_the_editor_shows_each_problem_on_its_line(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    token = form_token(admin.get("/jobs/new").text)
    text = "name: x\nresources:\n  gpus: X999:2\nrun: hi\nfoo: 1\n"
    checked = admin.post("/jobs/check", data={"csrf": token, "spec": text}).json()
    assert not checked["ok"]
    lines = {p["field"]: p["line"] for p in checked["problems"]}
    assert lines == {"resources.gpus.model": 3, "foo": 5}
    page = admin.post("/jobs/new", data={"csrf": token, "mode": "yaml", "spec": text})
    assert page.status_code == 422
    assert "unknown GPU model &#39;X999&#39;" in page.text
    assert '<span class="bad">3</span>' in page.text and '<span class="bad">5</span>' in page.text
    assert admin.post("/jobs/check", data={"csrf": token, "spec": HELLO}).json() == {
        "ok": True,
        "problems": [],
    }


def test_the_simple_form_submits_the_same_spec(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    token = form_token(admin.get("/jobs/new").text)
    form = {
        "csrf": token,
        "mode": "form",
        "name": "from-form",
        "project": "demo",
        "cpus": "2",
        "gpus": "0",
        "memory": "300M",
        "max_runtime": "5m",
        "run": "echo from the form\r\n",
        "request_id": "f00d",
    }
    resp = admin.post("/jobs/new", data=form, follow_redirects=False)
    assert resp.status_code == 303
    # A second click (same form, same request id) lands on the same job, not a new one.
    again = admin.post("/jobs/new", data=form, follow_redirects=False)
    assert again.headers["location"] == resp.headers["location"]
    job = sqlite_world.client().get(f"/api/v1{resp.headers['location']}").json()
    assert job["name"] == "from-form" and job["resources"] == "2 CPUs, 300M"
    assert job["spec"]["run"] == "echo from the form\n" and job["spec"]["max_runtime"] == "5m"
    empty = admin.post("/jobs/new", data={**form, "run": "  "})
    assert empty.status_code == 422 and "<code>run</code>" in empty.text


def test_job_page_and_its_event_stream_show_output_and_the_end(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    job_id = submit(admin)
    sqlite_world.run_until(job_id, {"SUCCEEDED"})
    with admin.stream("GET", f"/jobs/{job_id}/events") as stream:
        body = stream.read().decode()
    assert "event: log" in body and "hello-from-console" in body
    assert "event: status" in body and "state-succeeded" in body
    assert body.rstrip().endswith('data: {"state": "SUCCEEDED"}')
    page = admin.get(f"/jobs/{job_id}").text
    assert "hello-from-console" in page and "Timeline" in page and "released to local" in page
    assert "data-events" not in page  # an ended job's page follows nothing


def test_cancel_from_the_job_page_and_sign_out(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    job_id = submit(admin, HELLO.replace("echo hello-from-console", "sleep 60"))
    sqlite_world.run_until(job_id, {"RUNNING"})
    page = admin.get(f"/jobs/{job_id}").text
    assert 'id="cancel-form"' in page and "data-events" in page
    resp = admin.post(
        f"/jobs/{job_id}/cancel", data={"csrf": form_token(page)}, follow_redirects=False
    )
    assert resp.status_code == 303
    job = sqlite_world.run_until(job_id, {"CANCELLED"})
    assert job["reason"].startswith("cancelled by admin")
    assert "cancelled by admin" in admin.get(f"/jobs/{job_id}").text
    out = admin.post("/signout", data={"csrf": form_token(page)}, follow_redirects=False)
    assert out.status_code == 303 and 'grappe_session=""' in out.headers["set-cookie"]
    assert admin.get("/", follow_redirects=False).headers["location"] == "/signin?next=/"


def test_plan_against_the_reference_federation_explains_rejections(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    page = admin.get("/plan")
    assert 'value="eu-ai-factories" selected' in page.text
    spec = "name: a\nresources:\n  gpus: H100:8\nconstraints:\n  certifications: [HDS]\nrun: x\n"
    data = {"csrf": form_token(page.text), "against": "eu-ai-factories", "spec": spec}
    result = admin.post("/plan", data=data).text
    assert 'class="rejected"' in result and "HDS" in result
    assert 'tr class="best"' in result
    live = admin.post("/plan", data={**data, "against": "live"}).text
    assert 'data-site="local"' in live and "lacks certification HDS" in live
    bad = admin.post("/plan", data={**data, "against": "nowhere"})
    assert bad.status_code == 422 and "use live or one of" in bad.text


def test_usage_page_and_csv_after_a_job(sqlite_world: World) -> None:
    admin = sign_in(sqlite_world, sqlite_world.admin_token)
    sqlite_world.run_until(submit(admin), {"SUCCEEDED"})
    page = admin.get("/operator/usage").text
    assert "<svg" in page and "CPU-hours" in page
    csv_text = admin.get("/operator/usage.csv").text
    header, row = csv_text.splitlines()[:2]
    assert header == "project,site,gpu_hours,cpu_hours,eur,kg_co2,jobs"
    assert row.startswith("demo,local,0.0,") and row.endswith(",1")
    token = form_token(page)
    resp = admin.post(
        "/operator/projects/demo/allocate",
        data={"csrf": token, "gpu_hours": "12", "cpu_hours": "34", "days": "30"},
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert "now has 12.0 GPU-hours and 34.0 CPU-hours" in admin.get(resp.headers["location"]).text
    bad = admin.post(
        "/operator/projects/demo/allocate",
        data={"csrf": token, "gpu_hours": "lots", "cpu_hours": "1", "days": "1"},
    )
    assert bad.status_code == 422 and "gpu_hours: write a number" in bad.text


def test_french_from_the_browser_or_the_cookie(sqlite_world: World) -> None:
    client = TestClient(sqlite_world.app)
    assert "Connexion" in client.get("/signin", headers={"Accept-Language": "fr-FR,fr"}).text
    assert "Sign in" in client.get("/signin", headers={"Accept-Language": "de, en"}).text
    admin = sign_in(sqlite_world, sqlite_world.admin_token, lang="en")
    switched = admin.get("/lang/fr?next=/jobs", follow_redirects=False)
    assert switched.headers["location"] == "/jobs"
    assert "Tâches" in admin.get("/jobs").text


def test_every_english_message_has_a_french_one() -> None:
    assert set(i18n.MESSAGES["en"]) == set(i18n.MESSAGES["fr"])
    assert i18n.pick_language(None, "fr-CA;q=0.9, en;q=0.5") == "fr"
    assert i18n.translator("fr")("job.title", id=3, name="x") == "Tâche 3 : x"


def test_bars_mark_use_over_the_allocation() -> None:
    svg = charts.bars("GPU-hours", [charts.Bar("a<b", 5, 10), charts.Bar("c", 12, 10)], "h")
    assert svg.startswith("<svg") and "a&lt;b" in svg
    assert 'width="180.0" height="16" class="used"' in svg  # half of the 360-wide track
    assert 'width="360.0" height="16" class="over"' in svg and "12.00 / 10.00 h (120%)" in svg
    assert "nothing" in charts.bars("x", [], "h", empty="nothing")
    assert "0.000912 h" in charts.bars("CPU-hours", [charts.Bar("tiny", 0.000912)], "h")


def test_form_fields_become_yaml_the_editor_reads() -> None:
    text = specs.from_form({"name": "n", "cpus": "2", "gpus": "H100:1", "run": "a\r\nb"})
    checked = specs.check(text)
    assert checked.ok and checked.spec is not None
    assert checked.spec.resources.gpus.model == "H100" and checked.spec.run == "a\nb\n"
    assert specs.line_of("a: 1\nb:\n  c: 2\n", "b.c") == 3


def test_templates_and_static_files_ship_with_the_package() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["grappe"]
    package = root / "src" / "grappe"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    console = package / "console"
    for kind in ("templates", "static"):
        for path in (console / kind).iterdir():
            assert path in shipped, f"{path.name} is not in pyproject's package-data"


def test_a_site_that_does_not_answer_is_shown_as_such(tmp_path: Path) -> None:
    # A Ray cluster whose head is not there: nothing listens on that port.
    ray = {
        **local_site("hpc"),
        "backend": {"kind": "ray", "address": f"http://127.0.0.1:{free_port()}"},
    }
    world = open_world(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", [local_site(), ray])
    try:
        page = sign_in(world, world.admin_token).get("/").text
        assert 'data-site="hpc"' in page and "not answering" in page
    finally:
        world.factory.close()
