"""Issue 22, "the real error, always": a step that keeps failing on a connection that cannot be
made (a phased `http` step to a closed port, a phased agent turn with its gateway down, an
agent job's `gateway-agent` step with its gateway down) fails each attempt
with a failure small enough for the server to keep whole — never "Failure exceeds size limit."
— whose message names the root cause; `GET /jobs/<id>` and `shopfloor status` show it while
the step retries. Through a real `shopfloor worker` and controller on the session's dev server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from temporalio.client import Client

from shopfloor.devserver import DevServer
from tests.helpers import Stack, free_port, wait_until
from tests.phased.conftest import TOKEN

# What a refused connection says, as httpx reports it (one address, or every address tried).
REFUSED = ("Connection refused", "All connection attempts failed")
# Far below the server's failure size limit: a message a person reads in one screen line or two.
SHORT = 600


@pytest.fixture(scope="module")
def down_stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A phased worker whose gateway is a closed port, and which may call that port."""
    closed = free_port()
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("down"),
        extra_env={
            "SHOPFLOOR_GATEWAY_URL": f"http://127.0.0.1:{closed}",
            "SHOPFLOOR_GATEWAY_TOKEN": TOKEN,
            "SHOPFLOOR_EGRESS_ALLOW": f"127.0.0.1:{closed}",
        },
    )
    s.closed_port = closed  # type: ignore[attr-defined]
    s.start_worker("--kind", "phased")
    s.start_controller()
    yield s
    s.stop()


def _retrying_step(step: dict) -> dict:
    """A one-step definition retried for a long while: the job stays RUNNING meanwhile."""
    retry = {"attempts": 20, "initial": "1s", "maximum": "2s"}
    return {"definition": {"name": "down", "steps": [{"id": "s", **step, "retry": retry}]}}


def _server_failure(stack: Stack, job_id: str) -> list[str]:
    """The pending activity's last failure as the server keeps it: each message of its chain."""

    async def describe() -> list[str]:
        client = await Client.connect(stack.env["SHOPFLOOR_TEMPORAL_ADDRESS"])
        desc = await client.get_workflow_handle(job_id).describe()
        for pending in desc.raw_description.pending_activities:
            if pending.HasField("last_failure"):
                chain, failure = [], pending.last_failure
                while failure is not None:
                    chain.append(failure.message)
                    failure = failure.cause if failure.HasField("cause") else None
                return chain
        return []

    return asyncio.run(describe())


def _assert_real_error_while_retrying(stack: Stack, job_id: str, what: str) -> None:
    def failing() -> str | None:
        progress = stack.http.get(f"/jobs/{job_id}").json()["progress"]
        failures = [p["last_failure"] for p in progress if p.get("last_failure")]
        return failures[0] if failures and progress[0]["attempt"] >= 2 else None

    wait_until(lambda: failing() is not None, timeout_s=60, what="a step retrying")
    # The server kept the activity's own failure: no size-limit wrapper, a short message
    # naming what was called and why it failed.
    chain = _server_failure(stack, job_id)
    assert chain and "exceeds size limit" not in " ".join(chain), chain
    assert what in chain[0] and any(r in chain[0] for r in REFUSED), chain
    assert len(chain[0]) <= SHORT, chain
    # GET /jobs/<id> shows it while the step retries.
    shown = failing()
    assert shown is not None and what in shown and any(r in shown for r in REFUSED), shown
    assert "exceeds size limit" not in shown and len(shown) <= SHORT, shown
    # So does `shopfloor status`.
    status = stack.cli("status", job_id)
    assert status.returncode == 0, status.stderr
    assert "exceeds size limit" not in status.stdout, status.stdout
    assert any(r in status.stdout for r in REFUSED) and what in status.stdout, status.stdout
    assert stack.http.get(f"/jobs/{job_id}").json()["status"] == "RUNNING"


def test_http_step_to_a_closed_port_shows_the_refused_connection(down_stack: Stack) -> None:
    url = f"http://127.0.0.1:{down_stack.closed_port}/ping"  # type: ignore[attr-defined]
    job_id = down_stack.submit("phased", _retrying_step({"type": "http", "url": url}))
    try:
        _assert_real_error_while_retrying(down_stack, job_id, f"GET {url}")
    finally:
        down_stack.cli("cancel", job_id)


def test_agent_turn_with_its_gateway_down_shows_the_refused_connection(
    down_stack: Stack,
) -> None:
    step = {"type": "agent_turn", "job_id": "poetry-research-execute"}
    job_id = down_stack.submit("phased", _retrying_step(step))
    try:
        _assert_real_error_while_retrying(down_stack, job_id, "agent turn poetry-research-execute")
    finally:
        down_stack.cli("cancel", job_id)


@pytest.fixture(scope="module")
def agent_down_stack(
    dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An agent worker whose `gateway-agent` endpoint is a closed port it may call."""
    closed = free_port()
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("agent-down"),
        extra_env={
            "SHOPFLOOR_AGENT_GATEWAY_URL": f"http://127.0.0.1:{closed}/agent",
            "SHOPFLOOR_EGRESS_ALLOW": f"127.0.0.1:{closed}",
        },
    )
    s.start_worker("--kind", "agent")
    s.start_controller()
    yield s
    s.stop()


def test_agent_step_with_its_gateway_down_shows_the_refused_connection(
    agent_down_stack: Stack,
) -> None:
    job = {
        "goalId": "gateway-down",
        "specType": "hello",
        "specConfig": {"workKind": "greet"},
        "agentType": "gateway-agent",
        "agentConfig": {},
        "maxIterations": 3,
    }
    job_id = agent_down_stack.submit("agent", job)
    try:
        _assert_real_error_while_retrying(agent_down_stack, job_id, "gateway-agent step")
    finally:
        agent_down_stack.cli("cancel", job_id)
