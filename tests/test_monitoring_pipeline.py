"""The shipped monitoring pipeline, for real: Prometheus and Alertmanager started as a shopfloor
pipeline (process runtime, pool uids, the network filter on) scrape the controller's and the
workers' metrics ports through the monitoring opening, no alert fires on an idle stack, and a
SIGKILLed worker fires the documented `ShopfloorWorkerDown`.

The test's copy of the definition differs from examples/pipelines/monitoring.yaml only in its
ports, 1 s scrape and evaluation intervals and, in its copy of deploy/prometheus, 2 s `for:`s:
so that it takes seconds, not minutes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from shopfloor.devserver import DevServer
from tests.helpers import REPO, Stack, free_port, wait_until

MONITORING = REPO / "examples" / "pipelines" / "monitoring.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "shopfloor.json"
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan"}  # fmt: skip
needs = [shutil.which(b) for b in ("prometheus", "prometheus-alertmanager", "iptables")]
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pipeline services get pool uids as root only"),
    pytest.mark.skipif(
        not all(needs), reason="prometheus, prometheus-alertmanager, iptables: make setup"
    ),
]


def _readable(path: Path) -> None:
    """The services' uids read their directory (bound into their private /tmp)."""
    path.chmod(0o755)
    for child in path.iterdir():
        child.chmod(0o644)


def _definition(tmp: Path, ports: dict[str, int]) -> Path:
    """The shipped definition with this test's ports and short intervals; rules whose `for:`
    is 2 s, in a copy of deploy/prometheus (the service sees only its own directory)."""
    prom = tmp / "prometheus"
    prom.mkdir()
    shutil.copy(REPO / "deploy" / "prometheus" / "run_prometheus.py", prom)
    rules = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    (prom / "alerts.yml").write_text(re.sub(r"\bfor: \S+", "for: 2s", rules))
    _readable(prom)
    definition = yaml.safe_load(MONITORING.read_text())
    am, prometheus = definition["services"]
    am["command"] = am["command"].replace("9093", str(ports["alertmanager"]))
    am["cwd"] = str(REPO / "deploy" / "alertmanager")
    am["health"]["http"] = f"http://127.0.0.1:{ports['alertmanager']}/-/ready"
    prometheus["cwd"] = str(prom)
    prometheus["env"] = {
        "SHOPFLOOR_CONTROLLER_TARGETS": f"127.0.0.1:{ports['controller']}",
        "SHOPFLOOR_WORKER_TARGETS": f"127.0.0.1:{ports['worker_a']},127.0.0.1:{ports['worker_b']}",
        "PROMETHEUS_LISTEN": f"127.0.0.1:{ports['prometheus']}",
        "ALERTMANAGER": f"127.0.0.1:{ports['alertmanager']}",
        "SCRAPE_INTERVAL": "1s",
        "EVALUATION_INTERVAL": "1s",
    }
    prometheus["health"]["http"] = f"http://127.0.0.1:{ports['prometheus']}/-/ready"
    defs = tmp / "definitions"
    defs.mkdir()
    (defs / "monitoring.yaml").write_text(yaml.safe_dump(definition))
    return defs


@pytest.fixture
def monitored(dev_server: DevServer, tmp_path: Path) -> Iterator[tuple[Stack, dict[str, int]]]:
    ports = {
        k: free_port() for k in ("controller", "worker_a", "worker_b", "prometheus", "alertmanager")
    }
    defs = _definition(tmp_path, ports)
    s = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={
            "SHOPFLOOR_CONTROLLER_METRICS_PORT": str(ports["controller"]),
            "SHOPFLOOR_PIPELINE_DIRS": json.dumps([str(defs)]),
            "SHOPFLOOR_MONITORING_PIPELINE": "monitoring",
        },
    )
    try:
        # Worker A runs the pipeline; worker B is the one that will crash.
        s.start_worker(
            "--kind", "pipeline", "--kind", "script", "--kind", "agent",
            env={"SHOPFLOOR_WORKER_METRICS_PORT": str(ports["worker_a"])},
        )  # fmt: skip
        s.start_worker(
            "--kind", "script", env={"SHOPFLOOR_WORKER_METRICS_PORT": str(ports["worker_b"])}
        )
        s.start_controller()
        yield s, ports
    finally:
        try:
            s.http.post("/pipelines/monitoring/stop", params={"wait": 60})
        finally:
            _kill_leftover_services(tmp_path / "data" / "pipelines" / "monitoring")
            s.stop()


def _kill_leftover_services(run_dir: Path) -> None:
    """Services outlive workers: whatever a failed stop left is killed by its pidfile."""
    for pidfile in run_dir.glob("*.pid"):
        try:
            os.killpg(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def test_prometheus_pipeline_scrapes_everything_and_alerts_on_a_killed_worker(
    monitored: tuple[Stack, dict[str, int]],
) -> None:
    s, ports = monitored
    started = s.http.post("/pipelines/monitoring/start", params={"wait": 90})
    assert started.status_code == 200, started.text
    assert started.json()["phase"] == "running", started.text
    prometheus = httpx.Client(base_url=f"http://127.0.0.1:{ports['prometheus']}", timeout=10)

    # The opening is what lets the scrapes through: the metrics ports are shut to pool uids…
    rules = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    for port in (ports["worker_a"], ports["controller"]):
        assert re.search(rf"--dport {port} .*--uid-owner \S+ .*-j REJECT", rules), rules
        assert re.search(rf"--dport {port} .*--gid-owner 199999 .*-j ACCEPT", rules), rules
    # …and the monitoring services run as a pool uid with the monitoring group.
    pids = _pids(s.tmp)
    assert len(pids) == 2
    for pid in pids:
        uid, gid = _ids(pid)
        assert uid >= 200000 and gid == 199999, (pid, uid, gid)

    def targets() -> dict[str, str]:
        active = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        return {t["scrapeUrl"]: (t["health"], t["lastError"]) for t in active}

    expected = {
        f"http://127.0.0.1:{ports[k]}/metrics" for k in ("controller", "worker_a", "worker_b")
    }

    def all_up() -> bool:
        found = targets()
        return set(found) == expected and all(h == "up" for h, _ in found.values())

    try:
        wait_until(all_up, timeout_s=30, what="every shopfloor target up in Prometheus")
    except AssertionError:
        raise AssertionError(f"targets: {targets()}") from None

    # Idle: several evaluations with every rule's 2 s `for:` elapsed, and nothing pending or
    # firing (ShopfloorWorkWaiting fired on idle stacks when latencies were milliseconds).
    def evaluated(times: int) -> bool:
        query = 'count_over_time(up{job="shopfloor-workers"}[1m])'
        found = prometheus.get("/api/v1/query", params={"query": query}).json()["data"]
        return bool(found["result"]) and min(float(r["value"][1]) for r in found["result"]) >= times

    wait_until(lambda: evaluated(8), timeout_s=30, what="eight scrapes of every worker")
    alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
    assert alerts == [], alerts
    # The rules that were evaluated are the shipped ones.
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"ShopfloorWorkerDown", "ShopfloorWorkWaiting"} <= names

    _dashboard_queries_only_scraped_metrics(s, prometheus)

    s.workers[1].sigkill()

    def worker_down() -> list[dict] | None:
        alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        firing = [
            a
            for a in alerts
            if a["labels"]["alertname"] == "ShopfloorWorkerDown" and a["state"] == "firing"
        ]
        return firing or None

    firing = wait_until(worker_down, timeout_s=40, what="ShopfloorWorkerDown firing")
    assert isinstance(firing, list)
    assert [a["labels"]["instance"] for a in firing] == [f"127.0.0.1:{ports['worker_b']}"]
    # Alertmanager, the pipeline's other service, received it.
    manager = f"http://127.0.0.1:{ports['alertmanager']}/api/v2/alerts"

    def received() -> bool:
        return any(
            a["labels"]["alertname"] == "ShopfloorWorkerDown"
            for a in httpx.get(manager, timeout=10).json()
        )

    wait_until(received, timeout_s=30, what="the alert in Alertmanager")


def _pids(tmp: Path) -> list[int]:
    return [
        json.loads(p.read_text())["pid"]
        for p in (tmp / "data" / "pipelines" / "monitoring").glob("*.pid")
    ]


def _ids(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def dashboard_metrics() -> dict[str, set[str]]:
    """Each panel's title → the metric names its PromQL queries name (functions, keywords,
    label names and values, ranges and Grafana's variables left out)."""
    found = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        names: set[str] = set()
        for target in panel.get("targets", []):
            expr = re.sub(r'"[^"]*"', "", target["expr"])  # label values
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # matchers, ranges
            expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # label lists
            for name in re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr):
                if name.lower() not in _PROMQL_WORDS:
                    names.add(name)
        if panel["type"] != "row":
            found[panel["title"]] = names
    return found


def test_the_dashboard_is_json_whose_panels_each_query_metrics() -> None:
    panels = dashboard_metrics()
    assert len(panels) >= 20
    assert all(panels.values()), [t for t, n in panels.items() if not n]
    every = set().union(*panels.values())
    assert "temporal_activity_schedule_to_start_latency_seconds_bucket" in every
    assert "shopfloor_pipeline_service_healthy" in every and "rate" not in every


def _dashboard_queries_only_scraped_metrics(s: Stack, prometheus: httpx.Client) -> None:
    """Every metric a Grafana panel queries is in Prometheus's real scrapes of this stack,
    once it has done the things the panels show: jobs (one killed at its time limit), an agent
    run, a pipeline service restart."""
    jobs = [
        ("script", {"source": "print('ok')"}, "passed"),
        ("script", {"source": "import time\ntime.sleep(30)", "timeout_s": 1}, "timed_out"),
        ("agent", json.loads((REPO / "examples" / "agents" / "hello.json").read_text()), "passed"),
    ]
    for kind, job, outcome in jobs:
        assert s.run(kind, job, wait_s=120)["outcome"] == outcome
    restarted = s.http.post(
        "/jobs/pipeline-monitoring/updates/restart_service", json={"service": "alertmanager"}
    )
    assert restarted.status_code == 200, restarted.text
    wanted = set().union(*dashboard_metrics().values())

    def missing() -> set[str]:
        names = set(prometheus.get("/api/v1/label/__name__/values").json()["data"])
        return wanted - names

    try:
        wait_until(lambda: not missing(), timeout_s=30, what="every dashboard metric scraped")
    except AssertionError:
        raise AssertionError(f"queried by the dashboard, never scraped: {missing()}") from None


def test_a_definition_that_is_not_the_operators_gets_no_way_to_the_metrics_ports(
    monitored: tuple[Stack, dict[str, int]],
) -> None:
    """Anyone who may start pipelines can send one named `monitoring`: a service that is not
    the operator's, field for field, gets no group, and the filter shuts it out of every
    metrics port like any other pool uid."""
    s, ports = monitored
    defs = Path(json.loads(s.env["SHOPFLOOR_PIPELINE_DIRS"])[0])
    definition = yaml.safe_load((defs / "monitoring.yaml").read_text())
    definition["services"][1]["env"]["PROMETHEUS_RETENTION"] = "2h"  # one field differs
    started = s.http.post(
        "/pipelines/monitoring/start", params={"wait": 90}, json={"definition": definition}
    )
    assert started.status_code == 200 and started.json()["phase"] == "running", started.text
    # Judged service for service: the changed one has no group, the unchanged one keeps it.
    run_dir = s.tmp / "data" / "pipelines" / "monitoring"
    changed = _ids(json.loads((run_dir / "prometheus.pid").read_text())["pid"])
    same = _ids(json.loads((run_dir / "alertmanager.pid").read_text())["pid"])
    assert changed[0] >= 200000 and changed[1] != 199999, changed
    assert same[1] == 199999, same
    prometheus = httpx.Client(base_url=f"http://127.0.0.1:{ports['prometheus']}", timeout=10)

    def scraped() -> dict[str, tuple[str, str]] | None:
        active = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        found = {t["scrapeUrl"]: (t["health"], t["lastError"]) for t in active}
        return found if len(found) == 3 and all(h != "unknown" for h, _ in found.values()) else None

    found = wait_until(scraped, timeout_s=30, what="a scrape of every target")
    assert isinstance(found, dict)
    assert all(h == "down" and "connection refused" in e for h, e in found.values()), found
