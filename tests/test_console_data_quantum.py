"""The console's Data and Quantum pages through FastAPI's test client, against a real factory.

Datasets: the catalog by sector, a dataset's versions, licence and access, the
request form, the operators' queue (grant with an expiry, refuse with a
reason, revoke), downloads only for those allowed. Quantum: the devices, a
program submitted from the form and run on Qiskit Aer, its histogram and
result.json, bad programs shown in the form, shot grants from the operator
page. A member sees only their projects' requests and tasks, in English or French.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from grappe.console import charts
from grappe.services import projects
from grappe.services.auth import authenticate
from tests.conftest import World, local_site, open_world
from tests.test_console import form_token, sign_in
from tests.test_data_story import COHORT, add_health
from tests.test_quantum import _need
from tests.test_quantum_e2e import BELL, quantum_site

WEATHER = {
    "id": "climate/stations",
    "title": "Weather stations",
    "description": "hourly readings of a few stations",
    "publisher": "Test weather service",
    "licence": "etalab-2.0",
    "sensitivity": "open",
}
PURPOSE = "readmission model for the cardiology ward"


def add_open(world: World) -> None:
    admin = world.client()
    assert admin.post("/api/v1/datasets", json=WEATHER).status_code == 201
    up = admin.put(
        "/api/v1/datasets/climate/stations/versions/1/files/readings.csv", content=b"t,c\n1,12\n"
    )
    assert up.status_code == 201, up.text


@pytest.fixture
def dworld(world: World) -> World:
    """The test factory with a health dataset and an open one, none of the seeded catalog."""
    add_health(world)
    add_open(world)
    return world


@pytest.fixture
def people(dworld: World) -> tuple[World, TestClient, TestClient, TestClient]:
    """alice (demo), bob (his own project ``secret``) and an operator, signed in."""
    admin = authenticate(dworld.factory.store, dworld.admin_token)
    bob_token = dworld.user("bob", None)
    projects.create_project(dworld.factory.store, admin, "secret", 1, 10, members=["bob"])
    alice = sign_in(dworld, dworld.user("alice", "demo"))
    bob = sign_in(dworld, bob_token)
    olga = sign_in(dworld, dworld.user("olga", None, role="operator"))
    return dworld, alice, bob, olga


def ask(client: TestClient, project: str = "demo", purpose: str = PURPOSE) -> int:
    page = client.get("/data/health/cohort").text
    resp = client.post(
        "/data/health/cohort/request",
        data={"csrf": form_token(page), "project": project, "purpose": purpose},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return int(resp.headers["location"].rsplit("=", 1)[1])


def decide(client: TestClient, request_id: int, decision: str, **fields: str) -> httpx.Response:
    token = form_token(client.get("/data/queue").text)
    return client.post(
        f"/data/queue/{request_id}/{decision}",
        data={"csrf": token, **fields},
        follow_redirects=False,
    )


# ------------------------------------------------------------------ data


def test_data_and_quantum_pages_need_sign_in(sqlite_world: World) -> None:
    client = TestClient(sqlite_world.app)
    for path in ["/data", "/data/requests", "/data/queue", "/data/health/cohort", "/quantum"]:
        resp = client.get(path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/signin"), path
    signed = sign_in(sqlite_world, sqlite_world.admin_token).get("/").text
    assert 'href="/data"' in signed and 'href="/quantum"' in signed


def test_the_catalog_lists_datasets_and_filters_by_sector_and_words(dworld: World) -> None:
    alice = sign_in(dworld, dworld.user("alice"))
    page = alice.get("/data").text
    assert 'data-dataset="health/cohort"' in page and 'data-dataset="climate/stations"' in page
    assert '<option value="climate"' in page and '<option value="health"' in page
    assert "etalab-2.0" in page and "sens-health" in page
    health = alice.get("/data?sector=health").text
    assert 'data-dataset="health/cohort"' in health
    assert 'data-dataset="climate/stations"' not in health
    found = alice.get("/data?search=hourly").text
    assert (
        'data-dataset="climate/stations"' in found and 'data-dataset="health/cohort"' not in found
    )
    assert 'id="no-datasets"' in alice.get("/data?search=nothing-like-this").text


def test_open_data_shows_versions_and_downloads_for_every_member(dworld: World) -> None:
    alice = sign_in(dworld, dworld.user("alice"))
    page = alice.get("/data/climate/stations").text
    assert 'id="licence">etalab-2.0<' in page and 'data-readable="true"' in page
    assert 'data-version="1"' in page and "readings.csv" in page
    assert 'id="request-form"' not in page  # open data needs no request
    link = re.search(r'class="download" href="([^"]+)"', page)
    assert link, page
    got = alice.get(link.group(1).replace("&amp;", "&"))
    assert got.status_code == 200 and got.content == b"t,c\n1,12\n"
    assert got.headers["x-sha256"] == hashlib.sha256(b"t,c\n1,12\n").hexdigest()
    assert 'attachment; filename="readings.csv"' == got.headers["content-disposition"]


def test_health_data_asks_for_a_request_and_refuses_downloads(dworld: World) -> None:
    alice = sign_in(dworld, dworld.user("alice"))
    page = alice.get("/data/health/cohort").text
    assert 'data-readable="false"' in page and "has no access" in page
    assert 'id="request-form"' in page and "<option>demo</option>" in page
    assert 'class="download"' not in page
    refused = alice.get("/data/health/cohort/files/cohort.csv")
    assert refused.status_code == 403 and "project demo has no access" in refused.text
    assert alice.get("/data/health/nothing").status_code == 404


def test_a_request_waits_then_a_grant_lets_the_member_download(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    world, alice, _, olga = people
    req = ask(alice)
    page = alice.get(f"/data/health/cohort?asked={req}").text
    assert f"Request {req} sent" in page and 'id="request-form"' not in page
    assert "awaits an operator" in page
    mine = alice.get("/data/requests").text
    assert f'data-request="{req}"' in mine and 'data-state="pending"' in mine
    queue = olga.get("/data/queue").text
    assert f'id="request-{req}"' in queue and PURPOSE in queue
    granted = decide(olga, req, "grant", expires="30d", reason="ethics board approved")
    assert granted.status_code == 303
    assert 'id="queue-empty"' in olga.get("/data/queue").text
    page = alice.get("/data/health/cohort").text
    assert 'data-readable="true"' in page and 'data-state="granted"' in page
    link = re.search(r'class="download" href="([^"]+)"', page)
    assert link and "project=demo" in link.group(1)
    got = alice.get(link.group(1).replace("&amp;", "&"))
    assert got.status_code == 200 and got.content == COHORT
    # The grant and the read are in the audit log, as through the API.
    api = world.client().get("/api/v1/data/requests").json()
    assert api[0]["state"] == "granted" and api[0]["expires_at"]


def test_a_refusal_needs_a_reason_that_the_member_then_reads(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    _, alice, _, olga = people
    req = ask(alice)
    silent = decide(olga, req, "refuse", reason="  ")
    assert silent.status_code == 422
    assert "say why the request is refused" in silent.text
    assert decide(olga, req, "refuse", reason="no ethics approval yet").status_code == 303
    mine = alice.get("/data/requests?state=refused").text
    assert "no ethics approval yet" in mine and 'data-state="refused"' in mine
    assert 'id="no-requests"' in alice.get("/data/requests?state=granted").text
    # A refused project may ask again.
    assert 'id="request-form"' in alice.get("/data/health/cohort").text
    bad = decide(olga, req, "grant")
    assert bad.status_code == 409 and "is refused, not pending" in bad.text


def test_a_grant_can_be_revoked_from_the_queue(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    _, alice, _, olga = people
    req = ask(alice)
    decide(olga, req, "grant")
    assert decide(olga, req, "revoke", reason="study ended").status_code == 303
    page = alice.get("/data/health/cohort").text
    assert 'data-readable="false"' in page and "revoked (study ended)" in page
    assert alice.get("/data/health/cohort/files/cohort.csv").status_code == 403
    assert decide(olga, req, "approve").status_code == 404


def test_bad_requests_name_the_field(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    _, alice, _, _ = people
    token = form_token(alice.get("/data/health/cohort").text)
    short = alice.post(
        "/data/health/cohort/request", data={"csrf": token, "project": "demo", "purpose": "ml"}
    )
    assert short.status_code == 422 and "purpose: say in a sentence" in short.text
    other = alice.post(
        "/data/health/cohort/request", data={"csrf": token, "project": "secret", "purpose": PURPOSE}
    )
    assert other.status_code == 422 and "no such project of yours" in other.text
    opened = alice.post(
        "/data/climate/stations/request",
        data={"csrf": token, "project": "demo", "purpose": PURPOSE},
    )
    assert opened.status_code == 422 and "open data needs no request" in opened.text
    ask(alice)
    twice = alice.post(
        "/data/health/cohort/request", data={"csrf": token, "project": "demo", "purpose": PURPOSE}
    )
    assert twice.status_code == 409 and "awaits an operator" in twice.text


def test_members_see_only_their_projects_requests_and_never_the_queue(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    _, alice, bob, olga = people
    alice_req = ask(alice)
    bob_req = ask(bob, project="secret")
    listed = alice.get("/data/requests").text
    assert f'data-request="{alice_req}"' in listed and f'data-request="{bob_req}"' not in listed
    page = alice.get("/data/health/cohort").text
    assert f'data-request="{bob_req}"' not in page and "secret" not in page
    assert f'data-request="{bob_req}"' in bob.get("/data/requests").text
    for client in (alice, bob):
        resp = client.get("/data/queue")
        assert resp.status_code == 403 and "needs the operator or admin role" in resp.text
        token = form_token(client.get("/data").text)
        forged = client.post(f"/data/queue/{bob_req}/grant", data={"csrf": token})
        assert forged.status_code == 403
    both = olga.get("/data/queue").text
    assert f'id="request-{alice_req}"' in both and f'id="request-{bob_req}"' in both
    assert 'id="queue-link"' not in alice.get("/data").text
    assert 'id="queue-link"' in olga.get("/data").text


def test_data_forms_need_the_session_token(
    people: tuple[World, TestClient, TestClient, TestClient],
) -> None:
    world, alice, _, olga = people
    no_token = alice.post(
        "/data/health/cohort/request", data={"project": "demo", "purpose": PURPOSE}
    )
    assert no_token.status_code == 403
    req = ask(alice)
    other_site = olga.post(
        f"/data/queue/{req}/grant",
        data={"csrf": form_token(olga.get("/data/queue").text)},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert world.client().get("/api/v1/data/requests").json()[0]["state"] == "pending"


def test_data_pages_in_french(dworld: World) -> None:
    alice = sign_in(dworld, dworld.user("alice"), lang="fr")
    page = alice.get("/data").text
    assert "Jeux de données" in page and "Tous les secteurs" in page and ">Données<" in page
    cohort = alice.get("/data/health/cohort").text
    assert "Demander l&#39;accès" in cohort and "Vous ne pouvez pas encore lire" in cohort
    ask(alice)
    assert "en attente" in alice.get("/data/requests").text


# ------------------------------------------------------------------ quantum


@pytest.fixture
def qworld(tmp_path: Path, store_url: str) -> Iterator[World]:
    _need("qiskit", "qiskit_aer")
    w = open_world(tmp_path, store_url, sites=[local_site(), quantum_site()])
    yield w
    w.factory.close()


def run_task(client: TestClient, **fields: str) -> httpx.Response:
    page = client.get("/quantum").text
    data = {"csrf": form_token(page), "program": BELL, "shots": "400", "project": "demo"}
    return client.post("/quantum", data={**data, **fields}, follow_redirects=False)


def test_the_quantum_page_lists_devices_and_offers_examples(qworld: World) -> None:
    alice = sign_in(qworld, qworld.user("alice"))
    page = alice.get("/quantum").text
    for backend in ("emulators/aer", "emulators/atoms", "emulators/photons"):
        assert f'data-backend="{backend}"' in page
    assert "5 qubits" in page and "6 modes" in page and "0.001 EUR/shot" in page
    assert "OPENQASM 2.0;" in page and "qreg q[2];" in page
    hom = alice.get("/quantum?example=hom").text
    assert "&#34;modes&#34;: 2" in hom and "OPENQASM" not in hom.split('id="program"')[1][:300]
    assert "No quantum task yet." in alice.get("/quantum/rows").text


def test_a_bell_task_runs_and_shows_its_histogram_and_result_json(qworld: World) -> None:
    alice = sign_in(qworld, qworld.user("alice"))
    resp = run_task(alice, backend="emulators/aer", name="bell-from-console")
    assert resp.status_code == 303, resp.text
    task_id = int(resp.headers["location"].rsplit("/", 1)[1])
    waiting = alice.get(f"/quantum/tasks/{task_id}").text
    assert 'data-refresh="/quantum/tasks/' in waiting and "data-final" not in waiting
    assert qworld.run_until(task_id, {"SUCCEEDED", "FAILED"}, timeout=90)["state"] == "SUCCEEDED"
    panel = alice.get(f"/quantum/tasks/{task_id}/panel").text
    assert 'data-final="true"' in panel and "400 shots" in panel
    outcomes = dict(re.findall(r'data-outcome="(\d+)" data-count="(\d+)"', panel))
    assert set(outcomes) <= {"00", "11"} and sum(map(int, outcomes.values())) == 400
    assert 'id="result-json"' in panel and "400 shots · " in panel  # what was charged
    page = alice.get(f"/quantum/tasks/{task_id}").text
    assert "data-refresh" not in page and "<svg" in page  # an ended task is not polled
    result = alice.get(f"/quantum/tasks/{task_id}/result.json")
    assert result.headers["content-disposition"] == f'attachment; filename="quantum-{task_id}.json"'
    body = json.loads(result.text)
    api = qworld.client().get(f"/api/v1/quantum/tasks/{task_id}").json()
    assert body == api and body["counts"] == {k: int(v) for k, v in outcomes.items()}
    rows = alice.get("/quantum/rows").text
    assert f'data-task="{task_id}"' in rows and "emulators/aer" in rows


def test_a_photonic_task_from_the_example_shows_fock_states(qworld: World) -> None:
    _need("perceval")
    alice = sign_in(qworld, qworld.user("alice"))
    example = alice.get("/quantum?example=hom").text
    program = html.unescape(example.split('id="program"', 1)[1].split(">", 1)[1].split("</")[0])
    resp = run_task(alice, program=program, shots="300")
    assert resp.status_code == 303, resp.text
    task_id = int(resp.headers["location"].rsplit("/", 1)[1])
    assert qworld.run_until(task_id, {"SUCCEEDED", "FAILED"}, timeout=90)["state"] == "SUCCEEDED"
    panel = alice.get(f"/quantum/tasks/{task_id}/panel").text
    outcomes = dict(re.findall(r'data-outcome="([^"]+)" data-count="(\d+)"', panel))
    # Hong-Ou-Mandel: the two photons always leave by the same port.
    assert set(outcomes) <= {"|2,0&gt;", "|0,2&gt;"} and sum(map(int, outcomes.values())) == 300
    assert ">|2,0&gt;</text>" in panel and "⟩" not in panel
    assert "emulators/photons" in panel and "perceval · photonic" in panel


def test_a_bad_program_is_shown_in_the_form_with_its_line(qworld: World) -> None:
    alice = sign_in(qworld, qworld.user("alice"))
    typo = BELL.replace("cx q[0],q[1];", "cx q[0] q[1];")
    resp = run_task(alice, program=typo)
    assert resp.status_code == 422
    text = resp.text
    assert 'data-line="6"' in text and "not valid qasm2" in text
    assert "cx q[0] q[1];" in text  # the program is kept for the fix
    over = run_task(alice, shots="60000")
    assert over.status_code == 422 and "takes at most 50000 shots" in over.text
    words = run_task(alice, shots="many")
    assert words.status_code == 422 and "write a whole number of shots" in words.text
    unknown = run_task(alice, program="hello")
    assert unknown.status_code == 422 and "set format" in unknown.text
    assert qworld.client().get("/api/v1/jobs").json() == []


def test_a_member_never_sees_another_projects_task(qworld: World) -> None:
    admin = authenticate(qworld.factory.store, qworld.admin_token)
    bob_token = qworld.user("bob", None)
    projects.create_project(qworld.factory.store, admin, "secret", 1, 10, members=["bob"])
    bob = sign_in(qworld, bob_token)
    made = run_task(bob, project="secret")
    assert made.status_code == 303
    secret = int(made.headers["location"].rsplit("/", 1)[1])
    alice = sign_in(qworld, qworld.user("alice"))
    assert f'data-task="{secret}"' not in alice.get("/quantum/rows").text
    assert f'data-task="{secret}"' in bob.get("/quantum/rows").text
    for path in ["", "/panel", "/result.json"]:
        assert alice.get(f"/quantum/tasks/{secret}{path}").status_code == 404, path
    refused = run_task(alice, project="secret")
    assert refused.status_code == 422
    assert "you are not a member of this project" in refused.text
    # A plain job is not a task: its page says so.
    job = (
        qworld.client()
        .post("/api/v1/jobs", json={"name": "plain", "project": "demo", "run": "true"})
        .json()
    )
    assert alice.get(f"/quantum/tasks/{job['id']}").status_code == 404


def test_operators_grant_shots_and_tasks_over_them_are_refused(qworld: World) -> None:
    alice = sign_in(qworld, qworld.user("alice"))
    token = form_token(alice.get("/quantum").text)
    grant = {"csrf": token, "project": "demo", "shots": "300", "days": "7"}
    assert alice.post("/operator/quantum/allocate", data=grant).status_code == 403
    olga = sign_in(qworld, qworld.user("olga", None, role="operator"))
    page = olga.get("/operator").text
    assert 'id="shots-form"' in page and 'id="data-queue-link"' in page
    done = olga.post(
        "/operator/quantum/allocate",
        data={**grant, "csrf": form_token(page)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert "Project demo was granted more shots." in olga.get(done.headers["location"]).text
    over = run_task(alice, shots="400")
    assert over.status_code == 409
    assert "has 300 of its 300 shots left" in over.text
    bad = olga.post(
        "/operator/quantum/allocate", data={**grant, "csrf": form_token(page), "shots": "lots"}
    )
    assert bad.status_code == 422 and "shots: write a number" in bad.text
    nobody = olga.post(
        "/operator/quantum/allocate", data={**grant, "csrf": form_token(page), "project": "zz"}
    )
    assert nobody.status_code == 404 and "project &#39;zz&#39; does not exist" in nobody.text


def test_quantum_pages_in_french(qworld: World) -> None:
    alice = sign_in(qworld, qworld.user("alice"), lang="fr")
    page = alice.get("/quantum").text
    assert "Soumettre un programme" in page and ">Quantique<" in page and "Tirs" in page
    assert "Aucune tâche quantique" in page


def test_the_histogram_draws_one_bar_per_outcome() -> None:
    svg = charts.histogram("Counts", {"11": 480, "00": 520, "<1>": 0})
    assert svg.startswith("<svg") and "1,000 shots" in svg
    bars = re.findall(r'data-outcome="([^"]+)" data-count="(\d+)"', svg)
    assert bars == [("00", "520"), ("11", "480"), ("&lt;1&gt;", "0")]
    assert 'height="220.0" class="used"' in svg  # the tallest bar fills the chart
    assert "52%" in svg and "48%" in svg
    many = charts.histogram("Counts", {format(i, "07b"): i + 1 for i in range(100)})
    assert len(re.findall(r"data-outcome=", many)) == 64 and "+36 outcomes not drawn" in many
    assert "nothing yet" in charts.histogram("Counts", {}, empty="nothing yet")
