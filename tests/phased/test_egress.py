"""Server-side request forgery through phased `http` steps: the egress policy (shopfloor.egress).

A real server that records every request listens on loopback addresses (127.0.0.1, 127.0.0.2
and [::1], one port); phased jobs run by in-process workers point `http` steps at it in every
form a loopback address takes. Nothing may reach it unless the worker's allow-list names it,
and the control plane (Temporal's frontend, HTTP API, the controller, metrics) stays shut even
then. Every test here fails on the code before the policy: steps reached whatever they named.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from shopfloor.devserver import DevServer
from shopfloor.kinds.phased.kind import KIND as PHASED
from shopfloor.kinds.phased.models import PhasedInput, PhasedResult
from shopfloor.settings import Settings
from tests.helpers import free_port
from tests.phased.conftest import running


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class Recorder:
    """One port on 127.0.0.1, 127.0.0.2 and [::1]; `hits` lists every request that arrived."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                recorder.hits.append(f"{self.headers.get('Host')} {self.path}")
                body = b'{"secret": "planted"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        first = _Server(("127.0.0.1", 0), Handler)
        self.port = first.server_address[1]
        self.servers = [first, _Server(("127.0.0.2", self.port), Handler)]
        self.servers.append(_V6Server(("::1", self.port), Handler))
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@contextmanager
def redirector(to: str) -> Iterator[str]:
    """A server on 127.0.0.3 answering every request with a redirect to `to`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("location", to)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.3", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.3:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


def loopback_forms(port: int) -> dict[str, str]:
    """Every spelling of "this machine" a step might use (a name only if it resolves here)."""
    forms = {
        "127.0.0.2": f"http://127.0.0.2:{port}/",
        "[::1]": f"http://[::1]:{port}/",
        "::ffff:127.0.0.1": f"http://[::ffff:127.0.0.1]:{port}/",
        "0.0.0.0": f"http://0.0.0.0:{port}/",
        "decimal 2130706433": f"http://2130706433:{port}/",
        "hex 0x7f.1": f"http://0x7f.1:{port}/",
        "octal 0177.0.0.1": f"http://0177.0.0.1:{port}/",
        "localhost": f"http://localhost:{port}/",
        "localhost.": f"http://localhost.:{port}/",
    }
    host = socket.gethostname()
    try:
        if socket.gethostbyname(host).startswith("127."):
            forms[f"{host} (this machine's name)"] = f"http://{host}:{port}/"
    except OSError:
        pass
    return forms


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, task_queue_prefix=f"tq-{uuid.uuid4().hex[:8]}-", **kw)


async def _http_step(env: WorkflowEnvironment, settings: Settings, url: str) -> str:
    """Runs a one-step phased job against `url`: "ok", or the job's failure message."""
    job = PhasedInput.model_validate(
        {
            "definition": {
                "name": "egress",
                "steps": [{"id": "h", "type": "http", "url": url, "retry": {"attempts": 1}}],
            }
        }
    )
    handle = await env.client.start_workflow(
        "PhasedWorkflow",
        job,
        id=f"phased-{uuid.uuid4()}",
        task_queue=settings.task_queue_prefix + "phased-queue",
        result_type=PhasedResult,
    )
    try:
        await handle.result()
    except WorkflowFailureError as err:
        return str(err.cause)
    return "ok"


async def _run_all(env: WorkflowEnvironment, settings: Settings, urls: dict[str, str]) -> dict:
    async with running(env.client, settings, [PHASED]):
        outcomes = await asyncio.gather(*(_http_step(env, settings, u) for u in urls.values()))
    return dict(zip(urls, outcomes, strict=True))


async def test_no_loopback_form_reaches_a_local_server_by_default(
    env: WorkflowEnvironment, recorder: Recorder, tmp_path: Path
) -> None:
    """Before the policy every one of these reached the recorder and the job completed.
    Beside them, two innocent jobs call the one server the worker's allow-list names (its
    port on 127.0.0.1 only): they complete, and their requests are all that server saw."""
    urls = loopback_forms(recorder.port)
    innocent = Recorder()
    innocents = {f"innocent {n}": f"http://127.0.0.1:{innocent.port}/innocent-{n}" for n in (1, 2)}
    try:
        with redirector(f"http://127.0.0.1:{recorder.port}/redirected") as hop:
            urls["a redirect to loopback"] = f"http://{hop}/"
            settings = _settings(tmp_path, egress_allow=[f"127.0.0.1:{innocent.port}"])
            outcomes = await _run_all(env, settings, {**urls, **innocents})
    finally:
        innocent.close()
    assert [outcomes.pop(name) for name in innocents] == ["ok", "ok"]
    assert sorted(innocent.hits) == [f"127.0.0.1:{innocent.port} /innocent-{n}" for n in (1, 2)]
    assert recorder.hits == []
    for form, outcome in outcomes.items():
        assert outcome != "ok", form
        # Refused at once, naming the rule (octal: httpx refuses to parse it at all).
        expected = "invalid URL" if form.startswith("octal") else "egress refused"
        assert expected in outcome, (form, outcome)
    assert "loopback address" in outcomes["localhost"]
    assert "unspecified address" in outcomes["0.0.0.0"]
    assert "SHOPFLOOR_EGRESS_ALLOW" in outcomes["[::1]"]


async def test_the_allow_list_opens_loopback_and_the_recorder_sees_it(
    env: WorkflowEnvironment, recorder: Recorder, tmp_path: Path
) -> None:
    """The positive control: the recorder records what reaches it. Allow-listed, every form
    (but the octal one httpx cannot parse) reaches it, redirects too."""
    urls = loopback_forms(recorder.port)
    del urls["octal 0177.0.0.1"]
    with redirector(f"http://127.0.0.1:{recorder.port}/redirected") as hop:
        urls["a redirect to loopback"] = f"http://{hop}/"
        settings = _settings(tmp_path, egress_allow=["127.0.0.0/8", "::1", "0.0.0.0"])
        outcomes = await _run_all(env, settings, urls)
    assert set(outcomes.values()) == {"ok"}, outcomes
    assert len(recorder.hits) == len(urls)
    assert any(hit.endswith(" /redirected") for hit in recorder.hits)


async def test_a_redirect_is_checked_again(
    env: WorkflowEnvironment, recorder: Recorder, tmp_path: Path
) -> None:
    """Only the redirecting host is allow-listed: its redirect to loopback is refused."""
    with redirector(f"http://127.0.0.1:{recorder.port}/redirected") as hop:
        settings = _settings(tmp_path, egress_allow=[hop])
        outcomes = await _run_all(env, settings, {"hop": f"http://{hop}/"})
    assert recorder.hits == []
    assert "egress refused" in outcomes["hop"] and "127.0.0.1" in outcomes["hop"]


async def test_the_control_plane_stays_shut_even_when_loopback_is_allowed(
    env: WorkflowEnvironment, dev_server: DevServer, recorder: Recorder, tmp_path: Path
) -> None:
    """Loopback allow-listed wholesale: Temporal's frontend and HTTP API (which read other
    jobs' input and terminate jobs), and a port configured as the controller's or a metrics
    port (the recorder's), are still refused."""
    http_api = f"http://127.0.0.1:{dev_server.port + 10}/api/v1/namespaces/default/workflows"
    # The HTTP API is really there: without the policy a step read the job list through it.
    assert httpx.get(http_api, timeout=10).status_code == 200
    settings = _settings(
        tmp_path,
        temporal_address=dev_server.address,
        controller_port=recorder.port,
        egress_allow=["127.0.0.0/8", "::1"],
    )
    urls = {
        "Temporal's HTTP API": http_api,
        "the Temporal frontend": f"http://{dev_server.address}/",
        "the shopfloor controller": f"http://localhost:{recorder.port}/jobs",
    }
    outcomes = await _run_all(env, settings, urls)
    assert recorder.hits == []
    for what, outcome in outcomes.items():
        assert "control plane" in outcome and what in outcome, (what, outcome)

    metrics = _settings(
        tmp_path, egress_allow=["127.0.0.0/8"], egress_deny_ports=[free_port(), recorder.port]
    )
    outcome = await _run_all(env, metrics, {"m": f"http://127.0.0.2:{recorder.port}/metrics"})
    assert recorder.hits == [] and "metrics or control port" in outcome["m"]
