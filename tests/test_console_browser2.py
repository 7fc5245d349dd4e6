"""Datasets and quantum tasks in a real browser: Debian's Chromium against ``grappe up``.

A member asks for a health dataset in one browser context while an operator,
in another, grants it from the data queue; the member then downloads the file.
A member runs a Bell circuit from the Quantum page and watches its histogram
appear without reloading. Screenshots go to ``bench/results/console/`` (or
``$GRAPPE_CONSOLE_SCREENSHOTS``) beside those of test_console_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import local_site
from tests.fixtures_e2e import Server
from tests.test_console_browser import (  # noqa: F401 - fixtures
    browser,
    open_tab,
    page,
    shot,
    sign_in,
)
from tests.test_data_story import COHORT, HEALTH
from tests.test_quantum import _need
from tests.test_quantum_e2e import quantum_site

pytestmark = [pytest.mark.integration]

PURPOSE = "a readmission model for the cardiology ward"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need("qiskit", "qiskit_aer")
    root = tmp_path_factory.mktemp("console-data-quantum")
    srv = Server(root, [local_site(cpus=2, memory="4G"), quantum_site()], None)
    srv.start()
    with srv.api() as api:
        assert api.post("/datasets", json=HEALTH).status_code == 201
        up = api.put("/datasets/health/cohort/versions/1/files/cohort.csv", content=COHORT)
        assert up.status_code == 201, up.text
    yield srv
    srv.kill()
    srv.kill_leftover_jobs()


def user(server: Server, name: str, role: str = "member") -> str:
    with server.api() as api:
        body: dict[str, Any] = {"name": name, "role": role}
        if role == "member":
            body["project"] = "demo"
        made = api.post("/users", json=body)
        assert made.status_code in (200, 201), made.text
        return str(made.json()["token"])


@pytest.fixture
def second_tab(browser: Any, server: Server) -> Iterator[Any]:  # noqa: F811
    """Another person's browser: a context of its own, with its own cookies."""
    with open_tab(browser, server) as tab:
        yield tab


def test_a_member_requests_a_dataset_and_an_operator_grants_it(
    page: Any,  # noqa: F811
    second_tab: Any,
    server: Server,
    tmp_path: Path,
) -> None:
    member, operator = page, second_tab
    sign_in(member, user(server, "ada"))
    member.click('nav a[data-page="data"]')
    cohort = member.locator('.dataset[data-dataset="health/cohort"]')
    assert "health" in cohort.inner_text()
    member.select_option('#data-filters select[name="sector"]', "health")
    member.click('#data-filters button[type="submit"]')
    member.wait_for_url("**/data?sector=health*")
    shot(member, "data-catalog")
    cohort.locator("h3 a").click()
    member.wait_for_url("**/data/health/cohort")
    assert member.get_attribute("#access", "data-readable") == "false"
    assert member.locator("a.download").count() == 0
    member.fill("#purpose", PURPOSE)
    shot(member, "dataset-request")
    member.click("#request-access")
    member.locator("#asked").wait_for()
    assert "awaits an operator" in member.inner_text("#access-why")

    sign_in(operator, user(server, "olga", role="operator"))
    operator.click('nav a[data-page="operator"]')
    operator.click("#data-queue-link")
    row = operator.locator("#pending tr[data-request]").filter(has_text=PURPOSE)
    row.locator('input[name="reason"]').fill("ethics board approved")
    row.locator('input[name="expires"]').fill("30d")
    shot(operator, "data-queue")
    row.locator("button.grant").click()
    operator.locator("#decided").wait_for()
    assert operator.locator("#queue-empty").count() == 1
    assert "granted" in operator.inner_text("#recent")

    member.reload()
    assert member.get_attribute("#access", "data-readable") == "true"
    assert "granted to demo" in member.inner_text("#access-why")
    with member.expect_download() as info:
        member.click("a.download")
    saved = tmp_path / "cohort.csv"
    info.value.save_as(saved)
    assert saved.read_bytes() == COHORT
    shot(member, "dataset-granted")
    member.goto("/data")
    member.click("#my-requests")
    assert "granted" in member.inner_text("table.requests")


def test_a_member_runs_a_bell_circuit_and_sees_its_histogram(
    page: Any,  # noqa: F811
    server: Server,
    tmp_path: Path,
) -> None:
    sign_in(page, user(server, "quinn"))
    page.click('nav a[data-page="quantum"]')
    assert page.locator('tr[data-backend="emulators/aer"]').count() == 1
    bell = page.input_value("#program")
    assert "OPENQASM 2.0;" in bell
    # A typo comes back in the form, the program kept, its line one click away.
    page.fill("#program", bell.replace("cx q[0],q[1];", "cx q[0] q[1];"))
    page.click("#run-task")
    problem = page.locator(".problems li")
    assert "not valid qasm2" in problem.inner_text()
    page.click(".problems .goto-line")
    chosen = page.evaluate(
        "(() => { const t = document.getElementById('program');"
        " return t.value.slice(t.selectionStart, t.selectionEnd); })()"
    )
    assert chosen == "cx q[0] q[1];"
    shot(page, "quantum-problem")
    page.fill("#program", bell)
    page.fill("#shots", "600")
    page.select_option("#backend", "emulators/aer")
    page.fill("#name", "bell-in-the-browser")
    shot(page, "quantum")
    page.click("#run-task")
    page.wait_for_url(re.compile(r".*/quantum/tasks/\d+$"))
    page.evaluate("window.stillThisPage = true")  # a reload would forget it
    bars = page.locator("svg.histogram g.outcome")
    bars.first.wait_for(timeout=90_000)
    assert page.evaluate("window.stillThisPage") is True
    assert page.get_attribute("#task-state", "data-state") == "SUCCEEDED"
    counts = {
        bars.nth(i).get_attribute("data-outcome"): int(bars.nth(i).get_attribute("data-count"))
        for i in range(bars.count())
    }
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 600
    assert all(n > 200 for n in counts.values()), counts  # a Bell pair: about half each
    shot(page, "quantum-task")
    with page.expect_download() as info:
        page.click("#result-json")
    saved = tmp_path / "result.json"
    info.value.save_as(saved)
    assert json.loads(saved.read_text())["counts"] == counts
    page.goto("/quantum")
    assert "bell-in-the-browser" in page.inner_text("#task-rows")


def test_a_member_makes_a_key_and_chats_with_a_streamed_answer(
    page: Any,  # noqa: F811
    server: Server,
    tmp_path: Path,
) -> None:
    from tests.tiny_lm import build_tiny_lm

    tiny = build_tiny_lm(tmp_path / "tiny")
    with server.api() as api:
        deployed = api.post("/models/deployments", json={"model": "tiny", "path": str(tiny)})
        assert deployed.status_code == 201, deployed.text
    sign_in(page, user(server, "mira"))
    page.click('nav a[data-page="models"]')
    assert page.get_attribute('.model[data-model="all-MiniLM-L6-v2"]', "data-served") == "true"
    # A wrong key is refused by /v1 and the playground says so.
    page.fill("#chat-key", "grpk_wrong")
    page.fill("#chat-message", "hello world")
    page.click("#chat-send")
    problem = page.locator("#chat-problem")
    problem.wait_for()
    assert "not valid" in problem.inner_text()
    page.fill("#key-form input[name=name]", "playground")
    page.click("#make-key")
    assert page.locator("#new-key").inner_text().startswith("grpk_")
    assert page.input_value("#chat-key") == page.locator("#new-key").inner_text()
    page.select_option("#chat-model", "tiny")
    page.fill("#chat-message", "hello world")
    page.click("#chat-send")
    answer = page.locator(".chat-assistant")
    answer.wait_for()
    page.wait_for_selector(".chat-assistant:not([data-streaming])", timeout=60_000)
    assert answer.inner_text().strip(), "the model answered nothing"
    assert page.locator(".chat-user").inner_text() == "hello world"
    assert page.locator("#chat-problem").is_hidden()
    shot(page, "models")
    # The secret was shown once: the list names the key, never its secret.
    secret = page.input_value("#chat-key")
    page.goto("/models")
    assert "playground" in page.inner_text("#keys") and secret not in page.content()
