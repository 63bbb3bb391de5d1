"""What a browser can be made to do to the controller, and guessing at its credentials: all
against real controller processes (uvicorn on 127.0.0.1) and a real Temporal dev server.

Each test here fails on the code before issue 20: cross-site POSTs were accepted (202) and any
Host header served when no token was set; wrong tokens and logins were answered as fast as
they came; a logged-out cookie still worked; `/docs` loaded Swagger UI from a CDN (blank with
no network) and a NUL in an artifact path was a 500.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from tests.helpers import Stack
from tests.test_metrics import samples

TOKEN = "trust-" + uuid.uuid4().hex
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def guarded(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A controller with a token (no worker: nothing here needs a job to run)."""
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("trust"),
        extra_env={"SHOPFLOOR_API_TOKEN": TOKEN},
    )
    s.start_controller()
    yield s
    s.stop()


def _from(stack: Stack, address: str, **kw) -> httpx.Client:
    """A client whose connections come from `address` (each loopback address is a client of
    its own to the controller's per-client limits)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=stack.url, transport=transport, timeout=30, **kw)


# -- no token: the browser of whoever runs it ---------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/jobs/script-0123/cancel", "/schedules/nightly/trigger", "/kill-switch/on", "/jobs/script"],
)
def test_cross_site_posts_are_refused_without_a_token(stack: Stack, path: str) -> None:
    """A page on another site POSTing to the open API (a form or fetch: no preflight)."""
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},  # another port
    ):
        r = stack.http.post(path, headers=headers, json={})
        assert r.status_code == 403, (path, headers, r.status_code, r.text)
        assert "cross-site request refused" in r.json()["detail"]
    if path.endswith("/cancel"):  # and what is not forged still gets through
        own = {"Origin": stack.url, "Sec-Fetch-Site": "same-origin"}
        for headers in (own, {}):  # a page of our own; curl and the CLI send neither header
            r = stack.http.post(path, headers=headers)
            assert r.status_code == 404, r.text  # reached the route: no such job


def test_only_configured_hosts_are_served(stack: Stack) -> None:
    """DNS rebinding: another site's name resolved to 127.0.0.1 reads the job list unless
    the Host header is checked."""
    r = stack.http.get("/jobs", headers={"Host": "rebind.evil.example"})
    assert r.status_code == 400 and "does not answer to host" in r.text
    assert stack.http.get("/jobs", headers={"Host": f"localhost:{stack.port}"}).status_code == 200
    assert stack.http.get("/jobs").status_code == 200  # 127.0.0.1:<port>


def test_without_a_token_it_listens_on_loopback_only_and_says_so(stack: Stack) -> None:
    log = (stack.tmp / "controller.log").read_text()
    assert "no SHOPFLOOR_API_TOKEN" in log and "(loopback) only" in log
    env = {**stack.env, "SHOPFLOOR_CONTROLLER_HOST": "0.0.0.0", "SHOPFLOOR_CONTROLLER_PORT": "1"}
    refused = subprocess.run(
        [sys.executable, "-m", "shopfloor", "controller"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "refusing to listen on 0.0.0.0 without SHOPFLOOR_API_TOKEN" in refused.stderr


def test_malformed_paths_are_4xx_not_500(stack: Stack) -> None:
    for path in ("/artifacts/job/a%00b.txt", "/jobs/%ff%fe", "/jobs?status=%00", "/jobs/a%01b"):
        r = stack.http.get(path)
        assert r.status_code == 400, (path, r.status_code, r.text)
    assert stack.http.get("/jobs/" + "a" * 9000).status_code == 414


# -- with a token: guessing, logging out --------------------------------------------------------


def _metric(stack: Stack, name: str, via: str) -> float:
    with _from(stack, "127.0.0.9", headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        text = c.get("/metrics").text
    return samples(text, f"{name}_total", via=via)


def test_wrong_bearer_tokens_are_throttled_and_counted(guarded: Stack) -> None:
    with _from(guarded, "127.0.0.2") as guesser:
        codes = [
            guesser.get("/jobs", headers={"Authorization": f"Bearer wrong-{i}"}).status_code
            for i in range(12)
        ]
        assert codes[:5] == [401] * 5  # the first few cost nothing
        assert 429 in codes[5:]
        # Locked out, the right token is not even checked: guessing gets no answer.
        right = guesser.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
    # Another client is not locked out by this one.
    with _from(guarded, "127.0.0.3") as other:
        assert other.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert _metric(guarded, "shopfloor_auth_failures", "bearer") >= 6
    assert _metric(guarded, "shopfloor_auth_throttled", "bearer") >= 1


def _login_form(client: httpx.Client) -> tuple[str, dict[str, str]]:
    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return csrf, {"Origin": str(client.base_url).rstrip("/")}


def test_wrong_logins_are_throttled(guarded: Stack) -> None:
    with _from(guarded, "127.0.0.4") as browser:
        csrf, origin = _login_form(browser)
        codes = [
            browser.post(
                "/ui/login", data={"csrf": csrf, "token": f"no-{i}", "next": "/"}, headers=origin
            ).status_code
            for i in range(10)
        ]
        assert codes[:5] == [401] * 5 and 429 in codes[5:], codes
        right = browser.post(
            "/ui/login", data={"csrf": csrf, "token": TOKEN, "next": "/"}, headers=origin
        )
        assert right.status_code == 429 and "shopfloor_session" not in right.cookies
    assert _metric(guarded, "shopfloor_auth_failures", "login") >= 6


def test_a_logged_out_cookie_is_refused(guarded: Stack) -> None:
    with _from(guarded, "127.0.0.5") as browser:
        csrf, origin = _login_form(browser)
        browser.post("/ui/login", data={"csrf": csrf, "token": TOKEN, "next": "/"}, headers=origin)
        cookie = browser.cookies.get("shopfloor_session")
        assert cookie
        browser.post("/ui/logout", data={"csrf": csrf}, headers=origin)
    # The same cookie, kept (a copy in another tab, or stolen): refused after the logout.
    with _from(guarded, "127.0.0.6", cookies={"shopfloor_session": cookie}) as copy:
        assert copy.get("/jobs").status_code == 401
        page = copy.get("/ui/schedules")
        assert page.status_code == 303 and "/ui/login" in page.headers["location"]


def test_docs_take_no_token_in_their_url(guarded: Stack) -> None:
    with _from(guarded, "127.0.0.7") as c:
        page = c.get("/docs", params={"token": TOKEN})
        assert page.status_code == 401 and TOKEN not in page.text
        page = c.get("/docs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and "token=" not in page.text
        assert "cdn." not in page.text and "/docs/assets/swagger-ui-bundle.js" in page.text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_docs_render_in_a_browser_with_the_network_off(stack: Stack) -> None:
    """Headless chromium; every request not to the controller is refused (and recorded)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context()

            def only_the_controller(route) -> None:
                if route.request.url.startswith(stack.url + "/"):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort("internetdisconnected")

            context.route("**/*", only_the_controller)
            page = context.new_page()
            for path, selector in (("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")):
                page.goto(stack.url + path)
                page.wait_for_selector(selector, timeout=30_000)
                assert "shopfloor" in page.inner_text(selector), path
        finally:
            browser.close()
    assert outside == []
