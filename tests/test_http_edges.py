"""Bad input over HTTP is a 4xx with a short message — never a 5xx, never an echo of a large
body. Explicit cases, then Schemathesis against the whole API, in-process (bounded for CI)."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from shopfloor.controller import create_app
from shopfloor.devserver import DevServer
from shopfloor.settings import Settings
from tests.helpers import Stack


def test_json_that_is_not_json_is_a_422(stack: Stack) -> None:
    cases = [
        (b'{"source": "print(1)", "timeout_s": NaN}', "NaN"),
        (b'{"source": "print(1)", "timeout_s": Infinity}', "Infinity"),
        (b'{"source": "print(1)", "timeout_s": -Infinity}', "Infinity"),
        (b'{"source": "print(\\"\\ud800\\")"}', "surrogate"),
    ]
    for body, needle in cases:
        r = stack.http.post(
            "/jobs/script", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and needle in r.text, (body, r.text)
    # A paired surrogate is a real character: accepted.
    r = stack.http.post(
        "/jobs/script",
        content=b'{"source": "print(\\"\\ud83d\\ude00\\")"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    stack.result(r.json()["job_id"])


def test_typos_are_refused_not_defaulted(stack: Stack) -> None:
    r = stack.http.post("/jobs/script", json={"source": "print(1)", "timeout_sec": 5})
    assert r.status_code == 422 and "timeout_sec" in r.text


def test_a_422_does_not_echo_a_large_input(stack: Stack) -> None:
    big = "x" * (3 * 2**20)
    r = stack.http.post("/jobs/script", json={"source": "print(1)", "junk": big})
    assert r.status_code == 422 and "junk" in r.text
    assert len(r.content) < 10_000


def test_bodies_over_the_limit_are_a_413_that_states_it(dev_server: DevServer, tmp_path) -> None:
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={"SHOPFLOOR_MAX_REQUEST_MB": "1"},
    )
    try:
        stack.start_controller()
        r = stack.http.post("/jobs/script", json={"source": "#" * (2 * 2**20)})
        assert r.status_code == 413 and "1 MiB" in r.json()["detail"]
        assert "/uploads" in r.json()["detail"]
    finally:
        stack.stop()


def test_input_too_large_for_temporal_is_a_413(stack: Stack) -> None:
    # Valid for the model (inline files up to 1 MiB each way), too big for one Temporal payload.
    files = [{"path": f"f{i}.txt", "content": "y" * 1_000_000} for i in range(1)]
    source = "#" * 1_000_000
    r = stack.http.post("/jobs/script", json={"source": source, "files": files})
    assert r.status_code in (201, 413), r.text  # offloaded, or refused with a reason
    if r.status_code == 413:
        assert "/uploads" in r.json()["detail"]


def test_list_refuses_an_unknown_status_by_name(stack: Stack) -> None:
    r = stack.http.get("/jobs", params={"status": "bogus"})
    assert r.status_code == 400
    assert "unknown status 'bogus'" in r.json()["detail"] and "RUNNING" in r.json()["detail"]
    assert "ExecutionStatus" not in r.text  # no internal query syntax
    assert stack.http.get("/jobs", params={"status": "completed"}).status_code == 200
    assert stack.http.get("/jobs", params={"status": "timed_out"}).status_code == 200


# -- the whole API, fuzzed in-process ---------------------------------------------------------


@pytest.fixture(scope="module")
def api(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory):
    app = create_app(
        Settings(
            temporal_address=dev_server.address,
            data_dir=tmp_path_factory.mktemp("fuzz"),
            # Nothing serves these queues: jobs the fuzzer starts just wait, in isolation.
            task_queue_prefix=f"fuzz-{uuid.uuid4().hex[:8]}-",
            # The in-process client's Host; the Host check, the cross-site check and the rest
            # of the request guards stay on.
            allowed_hosts=["testserver"],
        )
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_input_makes_a_server_error(api) -> None:
    """Every operation, with inputs generated from its own schema (valid and not): 503 only
    when Temporal is away, which it is not here — any 5xx is a defect."""
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} → {response.status_code}: "
                    f"{response.text[:200]}"
                )

        check()
    assert operations >= 20  # the fuzzer saw the API at all
    assert failures == []
