"""One trace from the HTTP submit to the run: the controller and a worker (real processes)
export OTLP/HTTP to a small collector in the test process."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shopfloor.devserver import DevServer
from tests.helpers import Stack, wait_until


class Collector:
    """Receives OTLP/HTTP protobuf exports on 127.0.0.1; keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        (a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"), "",
                    )  # fmt: skip
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append(
                                {
                                    "name": span.name,
                                    "service": service,
                                    "trace": span.trace_id.hex(),
                                    "id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "kind": span.kind,
                                }
                            )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as c:
        yield c


@pytest.fixture(scope="module")
def traced(
    dev_server: DevServer, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path_factory.mktemp("tracing"),
        extra_env={
            # The standard variable (SHOPFLOOR_OTLP_ENDPOINT is its alias).
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second
            "SHOPFLOOR_LOG_FORMAT": "json",
        },
    )
    s.start_worker("--kind", "script")
    s.start_controller()
    yield s
    s.stop()


def test_one_trace_from_the_http_submit_to_the_run(traced: Stack, collector: Collector) -> None:
    job_id = traced.submit("script", {"source": "print('traced')"})
    assert traced.result(job_id)["result"]["stdout_tail"] == "traced\n"
    wanted = [
        ("shopfloor-controller", "POST /jobs/script"),
        ("shopfloor-controller", "StartWorkflow:ScriptExecutionWorkflow"),
        ("shopfloor-worker", "RunWorkflow:ScriptExecutionWorkflow"),
        ("shopfloor-worker", "StartActivity:run_script"),
        ("shopfloor-worker", "RunActivity:run_script"),
        ("shopfloor-worker", "sandbox.run"),
    ]

    def chain() -> list[dict] | None:
        by_name = {}
        for span in list(collector.spans):
            by_name.setdefault((span["service"], span["name"]), []).append(span)
        if not all(w in by_name for w in wanted):
            return None
        # The trace of a submit that holds the whole chain (a controller may export another
        # request's span under the same name, in a trace of its own).
        for submit in by_name[wanted[0]]:
            in_trace = [s for s in collector.spans if s["trace"] == submit["trace"]]
            found = [
                next((s for s in in_trace if (s["service"], s["name"]) == w), None) for w in wanted
            ]
            if all(found):
                return found
        return None

    def missing() -> str:
        got = sorted((s["service"], s["name"], s["trace"][:8]) for s in collector.spans)
        return f"the spans {wanted} in one trace (spans received, with their trace: {got})"

    try:
        found = wait_until(chain, timeout_s=30, what="the spans in one trace")
    except AssertionError:
        raise AssertionError(f"timed out waiting for {missing()}") from None
    assert isinstance(found, list)
    submit, start, run_workflow, start_activity, run_activity, sandbox_run = found
    # HTTP request → start → (the SDK's workflow spans hang under the start, each workflow task
    # a short span of its own) → the activity scheduled by the workflow → its run on a worker.
    assert submit["parent"] == ""  # the trace starts at the HTTP request
    assert start["parent"] == submit["id"]
    assert run_workflow["parent"] == start["id"]
    assert start_activity["parent"] == start["id"]
    assert run_activity["parent"] == start_activity["id"]
    assert sandbox_run["parent"] == run_activity["id"]  # the user code's run itself


def test_json_logs_carry_the_job_ids_inside_an_activity_and_the_trace_ids() -> None:
    """`--log-format json`: any logger called inside an activity gets the job's ids."""
    import io
    import json
    import logging

    from opentelemetry.sdk.trace import TracerProvider
    from temporalio import activity
    from temporalio.testing import ActivityEnvironment

    from shopfloor.observability.logs import JobContextFilter, JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shopfloor.test.jsonlogs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    @activity.defn
    def work() -> None:
        logger.info("inside %s", "the activity")

    try:
        logger.info("outside")
        ActivityEnvironment().run(work)
        with TracerProvider().get_tracer("t").start_as_current_span("s"):
            logger.info("in a span")
    finally:
        logger.removeHandler(handler)
    outside, inside, in_span = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert outside["message"] == "outside" and "job_id" not in outside
    assert inside["message"] == "inside the activity" and inside["level"] == "info"
    info = ActivityEnvironment().info  # the test environment's default activity info
    assert inside["job_id"] == inside["workflow_id"] == info.workflow_id
    assert inside["run_id"] == info.workflow_run_id
    assert inside["activity"] == info.activity_type and inside["attempt"] == info.attempt
    assert len(in_span["trace_id"]) == 32 and len(in_span["span_id"]) == 16


def test_one_request_makes_exactly_one_server_span(traced: Stack, collector: Collector) -> None:
    """FastAPI's own telemetry is off: the request's only server span is ObservedHTTP's."""
    import secrets

    assert traced.http.get("/kinds").status_code == 200
    # Spans leave in the order they ended: once a later request's span is in, so is this one's
    # (the later one is told apart by the trace it continues).
    marker = secrets.token_hex(16)
    later = traced.http.get("/healthz", headers={"traceparent": f"00-{marker}-{'1' * 16}-01"})
    assert later.status_code == 200
    wait_until(
        lambda: any(s["trace"] == marker for s in list(collector.spans)),
        timeout_s=30,
        what="the later request's span",
    )
    spans = [s for s in list(collector.spans) if "/kinds" in s["name"]]
    assert [(s["name"], s["kind"], s["parent"]) for s in spans] == [
        ("GET /kinds", 2, "")  # 2: SPAN_KIND_SERVER
    ], spans


def test_json_log_lines_of_a_job_carry_its_trace_id(traced: Stack, collector: Collector) -> None:
    """A caller's trace: the controller's access line, the job's start and end lines and the
    lines logged inside its activity (here: the sandbox killed the run at its time limit) all
    carry the trace id the caller sent."""
    import json
    import secrets

    trace_id = secrets.token_hex(16)
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    r = traced.http.post(
        "/jobs/script",
        json={"source": "import time\ntime.sleep(30)", "timeout_s": 1},
        headers={"traceparent": parent},
    )
    assert r.status_code in (200, 201), r.text
    job_id = r.json()["job_id"]
    # Killed at its time limit: the job ends FAILED, timed out (docs/outcomes.md).
    assert (traced.result(job_id)["status"], traced.result(job_id)["outcome"]) == (
        "FAILED",
        "timed_out",
    )

    def lines(path: Path) -> list[dict]:
        found = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found

    def ended() -> list[dict] | None:
        mine = [e for e in lines(traced.tmp / "worker-0.log") if e.get("job_id") == job_id]
        return mine if any(e.get("event") == "job_ended" for e in mine) else None

    mine = wait_until(ended, timeout_s=30, what="the job's end line")
    assert isinstance(mine, list)
    events = {e.get("event"): e for e in mine if e.get("event")}
    assert events["job_started"]["kind"] == "script"
    end = events["job_ended"]
    assert end["kind"] == "script" and end["outcome"] == "timed_out"  # killed at its limit
    assert isinstance(end["duration_s"], float | int) and end["duration_s"] >= 0
    assert {e.get("trace_id") for e in mine} == {trace_id}, mine
    killed = [e for e in mine if e["message"] == "run killed by the sandbox: timeout"]
    assert killed and killed[0]["activity"] == "run_script", mine  # inside the activity
    access = [
        e
        for e in lines(traced.tmp / "controller.log")
        if e.get("logger") == "shopfloor.access" and e.get("route") == "/jobs/script"
    ]
    assert [e["trace_id"] for e in access if e.get("trace_id") == trace_id] == [trace_id]
    assert {e["status"] for e in access} <= {200, 201}
