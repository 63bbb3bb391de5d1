"""The dashboard in a real browser: Debian's chromium driven headless by Playwright, against a
controller and a worker (real processes) with an API token set.

Screenshots of each page go to tests/output/dashboard/ (SHOPFLOOR_TEST_OUTPUT overrides).
One browser for the whole module; every wait is bounded.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from tests.helpers import REPO, Stack, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: bash scripts/install-system-deps.sh"
)
TOKEN = "dash-" + uuid.uuid4().hex
OUT = Path(os.environ.get("SHOPFLOOR_TEST_OUTPUT", REPO / "tests" / "output")) / "dashboard"
RAMP_BOX = (REPO / "examples" / "ramp_box.py").read_text()
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def dash(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("dashboard"),
        extra_env={"SHOPFLOOR_API_TOKEN": TOKEN, "SHOPFLOOR_DASHBOARD_POLL_S": "0.5"},
    )
    s.http.headers["Authorization"] = f"Bearer {TOKEN}"
    s.start_worker("--kind", "script", "--kind", "simulation", "--kind", "agent")
    s.start_controller()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    OUT.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def signed_in(browser, dash: Stack) -> Iterator:
    """A browser context that went through the login form once."""
    context = browser.new_context(base_url=dash.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/")
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("table#jobs")
    page.close()
    yield context
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def test_login_form_sets_a_session_cookie_and_requests_without_it_are_refused(
    browser, dash: Stack
) -> None:
    context = browser.new_context(base_url=dash.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/")
    assert "/ui/login" in page.url  # the dashboard asks for the token first
    shot(page, "login")
    page.fill("input[name=token]", "not-the-token")
    page.click("form.login button[type=submit]")
    assert page.locator(".error").inner_text() == "That is not the token."
    assert not [c for c in context.cookies() if c["name"] == "shopfloor_session"]
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("table#jobs")
    (session,) = [c for c in context.cookies() if c["name"] == "shopfloor_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert TOKEN not in session["value"]  # a signed expiry, not the token

    # The API takes the cookie, as it takes the bearer token…
    cookie = {"shopfloor_session": session["value"]}
    with (
        httpx.Client(base_url=dash.url, timeout=30, cookies=cookie) as with_cookie,
        httpx.Client(base_url=dash.url, timeout=30) as without,
        httpx.Client(
            base_url=dash.url, timeout=30, cookies={"shopfloor_session": "9999999999.deadbeef"}
        ) as forged,
    ):
        assert with_cookie.get("/jobs").status_code == 200
        # …and refuses a request without either (API and dashboard alike).
        assert without.get("/jobs").status_code == 401
        assert without.get("/ui/events/jobs").status_code == 401
        assert without.get("/metrics").status_code == 401
        page_without = without.get("/", headers={"accept": "text/html"})
        assert page_without.status_code == 303 and "/ui/login" in page_without.headers["location"]
        assert forged.get("/jobs").status_code == 401
        # A cookie-carrying change from another origin is refused (CSRF), on the API too.
        cross = with_cookie.post(
            "/kill-switch/on", json={"reason": "x"}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        # A dashboard form posted without its CSRF token is refused even from our origin.
        no_csrf = with_cookie.post(
            "/ui/kill-switch",
            data={"action": "on", "confirm": "yes", "reason": "x"},
            headers={"origin": dash.url},
        )
        assert no_csrf.status_code == 403
    assert dash.http.get("/kill-switch").json()["on"] is False
    context.close()


def test_jobs_list_updates_by_itself_when_a_job_finishes(signed_in, dash: Stack) -> None:
    page = signed_in.new_page()
    page.goto("/?kind=script")
    page.wait_for_selector("table#jobs")
    page.evaluate("window.__notReloaded = true")
    job_id = dash.submit(
        "script", {"source": "import time\nprint('working', flush=True)\ntime.sleep(4)\n"}
    )
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.locator("td.status", has_text="RUNNING").wait_for()  # a new row arrives by itself
    shot(page, "jobs-running")
    row.locator("td.status", has_text="COMPLETED").wait_for()  # and changes by itself
    assert page.evaluate("window.__notReloaded") is True  # pushed, not a reload
    assert row.locator("td.id").inner_text() == job_id  # whole ids
    shot(page, "jobs")

    page.goto(f"/ui/jobs/{job_id}")
    assert page.locator("#stdout").inner_text().strip() == "working"
    assert page.locator(".exit-code").inner_text() == "0"
    shot(page, "job-script")
    page.close()


def test_a_simulation_video_plays_in_its_job_page(signed_in, dash: Stack) -> None:
    job_id = dash.submit(
        "simulation",
        {
            "scene": {"kind": "source", "source": RAMP_BOX},
            "options": {"duration_s": 2, "width": 320, "height": 240},
        },
    )
    result = dash.result(job_id, wait_s=180)["result"]
    assert result["video_url"], result
    page = signed_in.new_page()
    page.goto(f"/ui/jobs/{job_id}")
    assert page.locator(".verdict strong").inner_text() == result["outcome"]
    assert page.locator("table.metrics th", has_text="steps").count() >= 1
    video = page.locator("video#video")
    video.wait_for()
    page.evaluate("document.querySelector('video#video').play()")
    page.wait_for_function(
        "document.querySelector('video#video').currentTime > 0.3", timeout=WAIT_MS
    )
    src = video.get_attribute("src")
    ranged = signed_in.request.get(src, headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and len(ranged.body()) == 100  # seekable: HTTP Range
    shot(page, "job-simulation")
    page.close()


def test_an_agent_run_is_paused_and_resumed_from_its_buttons(signed_in, dash: Stack) -> None:
    job_id = dash.submit(
        "agent",
        {
            "goalId": "dash-" + uuid.uuid4().hex[:6],
            "specType": "multi-step",
            "specConfig": {"task": "tidy the shop", "maxSteps": 6},
            "agentConfig": {"delayMs": 1500},
            "maxIterations": 30,
        },
    )
    state = lambda: dash.http.get(f"/jobs/{job_id}/queries/state").json()  # noqa: E731
    wait_until(lambda: dash.http.get(f"/jobs/{job_id}/queries/state").status_code == 200)
    page = signed_in.new_page()
    page.goto(f"/ui/jobs/{job_id}")
    page.locator("#agent-state", has_text="running").wait_for()

    page.click("button#pause")
    page.locator("#agent-state", has_text="paused").wait_for()
    assert state()["paused"] is True
    steps_when_paused = len(state()["state"]["steps"])
    page.fill("textarea[name=text]", "answer in French")
    page.click("form.instruction button[type=submit]")
    page.locator(".msg", has_text="add_instruction").wait_for()
    assert state()["instructions"] == ["answer in French"]
    shot(page, "job-agent-paused")

    page.click("button#resume")
    page.locator("#agent-state", has_text="running").wait_for()
    assert state()["paused"] is False
    wait_until(
        lambda: len(state()["state"]["steps"]) > steps_when_paused,
        timeout_s=60,
        what="a new step after resume",
    )
    page.reload()
    assert page.locator("ol.transcript li").count() >= steps_when_paused
    shot(page, "job-agent")
    page.click("button#cancel")
    result = dash.result(job_id, wait_s=120)
    # Cancelled like any job (docs/outcomes.md): CANCELED, with the goal's result kept.
    assert (result["status"], result["outcome"]) == ("CANCELED", "cancelled"), result
    assert result["result"]["status"] == "CANCELLED"
    page.close()


def test_schedules_page_and_the_kill_switch_confirmation(signed_in, dash: Stack) -> None:
    page = signed_in.new_page()
    page.goto("/ui/schedules")
    assert page.locator("#kill-switch-state").inner_text() == "off"
    shot(page, "schedules")
    page.click("text=Turn on…")
    assert "/ui/kill-switch" in page.url  # a confirmation step, not the switch itself
    assert dash.http.get("/kill-switch").json()["on"] is False
    shot(page, "kill-switch-confirm")
    page.fill("input[name=reason]", "dashboard test")
    page.click("form.confirm button[type=submit]")
    page.locator("#kill-switch-state", has_text="ON").wait_for()
    assert dash.http.get("/kill-switch").json()["reason"] == "dashboard test"
    page.click("text=Turn off…")
    page.click("form.confirm button[type=submit]")
    page.locator("#kill-switch-state", has_text="off").wait_for()
    assert dash.http.get("/kill-switch").json()["on"] is False
    page.close()
