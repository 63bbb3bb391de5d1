"""Small pure pieces of observability: where spans go (the standard OTEL_* variables and the
SHOPFLOOR_ alias), the monitoring opening's filter rules, and the SDK exposition's fixes."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from shopfloor.observability.tracing import traces_endpoint
from shopfloor.sandbox.host import network_filter_rules
from shopfloor.settings import Settings
from shopfloor.usercode import metrics_ports


def test_the_standard_otlp_variables_win_and_the_shopfloor_one_is_an_alias() -> None:
    alias = Settings(otlp_endpoint="http://alias:4318")
    none = Settings()
    assert traces_endpoint(none, {}) is None
    assert traces_endpoint(alias, {}) == "http://alias:4318/v1/traces"
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://std:4318/"}
    assert traces_endpoint(alias, base) == "http://std:4318/v1/traces"
    signal = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom"}
    assert traces_endpoint(none, signal) == "http://t:4318/custom"  # used as it is
    assert traces_endpoint(alias, {**base, "OTEL_SDK_DISABLED": "true"}) is None
    assert traces_endpoint(alias, {**base, "OTEL_TRACES_EXPORTER": "none"}) is None


def test_the_monitoring_opening_accepts_only_metrics_ports_for_its_group_above_the_rejects() -> (
    None
):
    settings = Settings(
        controller_port=8000,
        worker_metrics_port=9464,
        controller_metrics_port=9463,
        monitoring_pipeline="monitoring",
        # A metrics port set to the controller's API port is never opened.
        temporal_address="127.0.0.1:7233",
    )
    opened = metrics_ports(settings)
    assert opened == [9463, 9464]
    assert metrics_ports(settings.model_copy(update={"monitoring_pipeline": ""})) == []
    clash = settings.model_copy(update={"controller_metrics_port": 8000})
    assert metrics_ports(clash) == [9464]
    rules = network_filter_rules((200000, 200999), [], [7233, 8000, 9463, 9464], opened, 199999)
    targets = [(r[r.index("--dport") + 1], r[-1], "--gid-owner" in r) for r in rules]
    assert targets == [
        ("7233", "REJECT", False),
        ("8000", "REJECT", False),
        ("9463", "REJECT", False),
        ("9464", "REJECT", False),
        ("9463", "ACCEPT", True),  # inserted last, so first in the chain
        ("9464", "ACCEPT", True),
    ]
    accept = rules[-1]
    assert accept[accept.index("--uid-owner") + 1] == "200000-200999"
    assert accept[accept.index("--gid-owner") + 1] == "199999"
    # Without a monitoring pipeline the rules are as before: rejects only.
    assert [r[-1] for r in network_filter_rules((200000, 200999), [], [9464])] == ["REJECT"]


def test_the_sdk_exposition_gets_one_total_suffix_and_a_service_label() -> None:
    import http.server
    import threading

    text = (
        b"# HELP temporal_local_activity_total_total x\n"
        b"# TYPE temporal_local_activity_total_total counter\n"
        b'temporal_local_activity_total_total{task_queue="q"} 3\n'
        b"# HELP temporal_request_latency_seconds x\n"
        b"# TYPE temporal_request_latency_seconds histogram\n"
        b'temporal_request_latency_seconds_bucket{le="0.1"} 1\n'
        b'temporal_request_latency_seconds_bucket{le="+Inf"} 1\n'
        b"temporal_request_latency_seconds_sum 0.05\n"
        b"temporal_request_latency_seconds_count 1\n"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *_: object) -> None:
            pass

    from shopfloor.observability.exposition import SdkMetrics

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry = CollectorRegistry()
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        registry.register(SdkMetrics(url, {"service": "shopfloor-worker"}))
        served = generate_latest(registry).decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'temporal_local_activity_total{service="shopfloor-worker",task_queue="q"} 3.0' in served
    assert "_total_total" not in served
    assert 'temporal_request_latency_seconds_count{service="shopfloor-worker"} 1.0' in served
