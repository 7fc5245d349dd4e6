"""The console in a real browser: Debian's Chromium, driven by Playwright, against ``grappe up``.

A person signs in with a token, submits a job (after the editor flags a
mistake on its line), watches its logs arrive and its state change without
reloading, plans a job against the reference European federation and reads
why sites were rejected, opens the operator pages and downloads usage as CSV,
and switches the console to French. Screenshots of the main pages are saved
under ``bench/results/console/`` (or ``$GRAPPE_CONSOLE_SCREENSHOTS``) for a
reviewer to look at.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from grappe.console.pages.plan import EXAMPLE as NEEDS_HDS  # H100:8, EU, HDS
from tests.conftest import missing
from tests.fixtures_e2e import Server, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="uses Debian's Chromium"),
]

CHROMIUM = "/usr/bin/chromium"
# Flags that let Chromium run headless as root in a container with no network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("GRAPPE_CONSOLE_SCREENSHOTS", REPO / "bench" / "results" / "console"))

COUNTING = """\
name: counting
project: demo
resources:
  cpus: 1
  memory: 128M
run: |
  for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done
  echo "all done"
max_runtime: 2m
"""
TYPO = COUNTING.replace("  memory: 128M", "  memory: 128M\n  gpu: 1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-factory")
    srv = Server(root, None, None)
    srv.start()
    yield srv
    srv.kill()
    srv.kill_leftover_jobs()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright; make install-test)")
    if not shutil.which(CHROMIUM):
        missing(f"{CHROMIUM} is missing (apt-get install chromium; make deps-system)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def open_tab(browser: Any, server: Server) -> Iterator[Any]:
    """A tab in a browser context of its own (its own cookies: one person)."""
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1366, "height": 900}, locale="en-GB"
    )
    context.set_default_timeout(20_000)
    tab = context.new_page()
    # Script errors and refusals by the page's Content-Security-Policy are bugs; a 4xx
    # answer the test asks for (a bad token, a member on an operator page) is not.
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield tab
    context.close()
    assert problems == [], problems


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    with open_tab(browser, server) as tab:
        yield tab


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, token: str) -> None:
    page.goto("/")
    assert "/signin" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#whoami")


def test_sign_in_submit_and_watch_a_job_finish(page: Any, server: Server) -> None:
    page.goto("/signin")
    page.fill("#token", "grp_not-a-token")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("#signin-error")
    shot(page, "signin")

    sign_in(page, server.admin_token)
    assert page.inner_text("#whoami") == "Signed in as admin (admin)"
    assert page.locator('.site[data-site="local"]').count() == 1

    page.click('nav a[data-page="jobs"]')
    page.click("#new-job")
    page.fill("#spec", TYPO)  # a typo: `gpu` for `gpus`, flagged on its line as typed
    problems = page.locator("#spec-problems .problems")
    problems.wait_for()
    assert "unknown field 'gpu'" in problems.inner_text()
    assert "line 6" in problems.inner_text()
    assert page.inner_text(".gutter .bad") == "6"
    shot(page, "job-editor-problem")
    page.fill("#spec", COUNTING)
    page.locator("#spec-problems .ok").wait_for()
    page.click("#submit-yaml")
    page.wait_for_url("**/jobs/*")
    page.evaluate("window.stillThisPage = true")  # a reload would forget it

    logs = page.locator("#logs")
    wait_for("the first output", lambda: "tick" in logs.inner_text(), timeout=30)
    page.locator('#job-state[data-state="SUCCEEDED"]').wait_for(timeout=30_000)
    wait_for("the last line", lambda: "all done" in logs.inner_text(), timeout=10)
    text = logs.inner_text()
    assert [f"tick {i}" in text for i in range(1, 7)] == [True] * 6
    assert page.evaluate("window.stillThisPage") is True
    timeline = page.inner_text("#timeline")
    for state in ("waiting", "sent to its site", "running", "succeeded"):
        assert state in timeline
    assert page.locator('.candidates tr.best[data-site="local"]').count() == 1
    assert page.locator("#cancel-form").count() == 0
    shot(page, "job-detail")

    page.goto("/jobs")
    assert page.locator("#job-rows tr[data-job]").count() >= 1
    assert "succeeded" in page.inner_text("#job-rows")
    shot(page, "jobs")
    page.goto("/")
    shot(page, "overview")


def test_the_queue_updates_without_reload(page: Any, server: Server) -> None:
    sign_in(page, server.admin_token)
    page.evaluate("window.stillThisPage = true")
    whole_site = {"project": "demo", "resources": {"cpus": 2}, "run": "sleep 3"}
    with server.api() as api:
        first = api.post("/jobs", json={"name": "first", **whole_site}).json()["id"]
        second = api.post("/jobs", json={"name": "second", **whole_site}).json()["id"]
    # The second waits for the first to free the site's two CPUs: the queue shows it.
    waiting = page.locator(f'#queue tr[data-job="{second}"]')
    waiting.wait_for(timeout=15_000)
    page.locator(f'#my-jobs tr[data-job="{first}"]').wait_for(timeout=15_000)
    shot(page, "overview-queue")
    server.wait_job(first)
    server.wait_job(second)
    waiting.wait_for(state="detached", timeout=15_000)
    assert page.evaluate("window.stillThisPage") is True


def test_plan_explains_every_rejected_site(page: Any, server: Server) -> None:
    sign_in(page, server.admin_token)
    page.click('nav a[data-page="plan"]')
    page.select_option("#against", "eu-ai-factories")
    page.fill("#spec", NEEDS_HDS)
    page.click("#plan-run")
    rejected = page.locator(".rejected")
    rejected.wait_for()
    reasons = rejected.inner_text()
    assert "lacks certification HDS" in reasons
    assert page.locator(".candidates tr.best").count() == 1
    shot(page, "plan")


def test_operator_pages_and_csv(page: Any, server: Server, tmp_path: Path) -> None:
    with server.api() as api:
        created = api.post("/users", json={"name": "carol", "project": "demo"})
        created.raise_for_status()
        job = api.post("/jobs", json={"name": "charged", "project": "demo", "run": "true"})
        job.raise_for_status()
    server.wait_job(job.json()["id"])  # so usage has a row to show
    sign_in(page, created.json()["token"])
    assert page.locator('nav a[data-page="operator"]').count() == 0
    answer = page.goto("/operator")
    assert answer is not None and answer.status == 403
    assert "needs the operator or admin role" in page.inner_text("#error-message")
    page.context.clear_cookies()

    sign_in(page, server.admin_token)
    page.click('nav a[data-page="operator"]')
    assert page.locator('tr[data-site="local"]').count() == 1
    assert page.locator('tr[data-project="demo"]').count() == 1
    row = page.locator('tr[data-project="demo"]')
    row.locator('input[name="gpu_hours"]').fill("25")
    row.locator("button").click()
    page.locator(".notice").wait_for()
    assert "25.0 GPU-hours" in page.inner_text(".notice")
    shot(page, "operator")

    page.click("#usage-link")
    page.locator("svg.chart").first.wait_for()
    shot(page, "operator-usage")
    with page.expect_download() as info:
        page.click("#usage-csv")
    saved = tmp_path / "usage.csv"
    info.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0] == "project,site,gpu_hours,cpu_hours,eur,kg_co2,jobs"
    assert any(line.startswith("demo,local,") for line in lines[1:])


def test_switch_to_french(page: Any, server: Server) -> None:
    sign_in(page, server.admin_token)
    page.click("#lang-switch")
    page.wait_for_selector("html[lang=fr]")
    assert page.inner_text('nav a[data-page="jobs"]') == "Tâches"
    assert "Connecté en tant que admin" in page.inner_text("#whoami")
    assert "La fédération" in page.inner_text("main")
    shot(page, "overview-fr")
    page.goto("/jobs")
    assert page.inner_text("h1").startswith("Tâches")
    page.click("#lang-switch")
    page.wait_for_selector("html[lang=en]")
