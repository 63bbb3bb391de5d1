"""The controller's contract: clear 4xx for bad input, 503 when Temporal is down, auth, docs."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Proc, Stack, free_port, wait_until


def test_bad_input_is_a_clear_4xx(stack: Stack) -> None:
    cases = [
        ({}, "source"),
        ({"source": "print(1)", "source_uri": "artifact://x/y"}, "exactly one"),
        ({"source": "x", "timeout_s": 0}, "timeout_s"),
        ({"source": "x", "memory_mb": 10}, "memory_mb"),
        ({"source": "x", "env": {"OPENAI_API_KEY": "sk"}}, "secret"),
        ({"source": "x", "files": [{"path": "../escape.py", "content": ""}]}, "inside"),
    ]
    for body, needle in cases:
        r = stack.http.post("/jobs/script", json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.text, (body, r.text)
        assert "Traceback" not in r.text
    # Allowed by the model but not by this deployment's allow-list.
    r = stack.http.post("/jobs/script", json={"source": "x", "env": {"NOT_ALLOWED": "1"}})
    assert r.status_code == 422 and "allow-list" in r.json()["detail"]
    r = stack.http.post(
        "/jobs/script", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_unknown_things_are_404(stack: Stack) -> None:
    assert stack.http.get("/jobs/no-such-job").status_code == 404
    assert stack.http.get("/jobs/no-such-job/result").status_code == 404
    assert stack.http.get("/artifacts/no-such-job/file.txt").status_code == 404
    assert stack.http.get("/artifacts/../../etc/passwd").status_code in (400, 404)
    assert stack.http.post("/jobs/unknown-kind", json={}).status_code in (404, 405)


def test_openapi_lists_every_kind(stack: Stack) -> None:
    paths = stack.http.get("/openapi.json").json()["paths"]
    kinds = [k["name"] for k in stack.http.get("/kinds").json()]
    assert kinds and all(f"/jobs/{k}" in paths for k in kinds)
    assert stack.http.get("/docs").status_code == 200


def test_temporal_down_is_503_not_500(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    stack = Stack(temporal_address=dead, tmp=tmp_path)
    try:
        stack.controller = Proc(["controller"], stack.env, tmp_path / "c.log").start()
        wait_until(lambda: _answers(stack), timeout_s=30, what="controller answering")
        health = stack.http.get("/healthz")
        assert health.status_code == 503 and health.json()["ok"] is False
        r = stack.http.post("/jobs/script", json={"source": "print(1)"})
        assert r.status_code == 503 and dead in r.json()["detail"]
        assert stack.http.get("/jobs/x").status_code == 503
        assert stack.http.get("/jobs").status_code == 503
    finally:
        stack.stop()


def _answers(stack: Stack) -> bool:
    try:
        stack.http.get("/healthz")
        return True
    except Exception:
        return False


def test_bearer_token(dev_server, tmp_path: Path) -> None:
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={"SHOPFLOOR_API_TOKEN": "s3cret"},
    )
    try:
        stack.start_controller()  # /healthz stays open for load balancers
        assert stack.http.get("/jobs").status_code == 401
        assert stack.http.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = stack.http.get("/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert stack.http.get("/jobs", params={"token": "s3cret"}).status_code == 200
    finally:
        stack.stop()


def test_root_shows_where_to_go(stack: Stack) -> None:
    page = stack.http.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "API docs" in page.text and f"{stack.url}/docs" in page.text
    links = stack.http.get("/").json()["links"]
    assert links["jobs"] == f"{stack.url}/jobs"
