"""Pipeline definitions: YAML validated by pydantic, errors that name the bad field, a DAG."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.kinds.pipeline.definition import (
    DefinitionError,
    known_definitions,
    load_definition,
    parse_definition,
)
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.settings import Settings
from tests.helpers import REPO

GOOD = """
name: shop
services:
  - {name: db, command: "python3 db.py --port 5000", health: {tcp: "127.0.0.1:5000"}}
  - {name: api, command: [python3, api.py], depends_on: [db]}
  - {name: worker, image: example/worker:2, depends_on: [db]}
  - {name: web, image: example/web, depends_on: [api, worker], ports: {"80/tcp": 8080}}
"""


def test_a_good_definition() -> None:
    d = parse_definition(GOOD, base_dir=Path("/srv/shop"))
    assert d.queue == "shop-queue" and d.workflow == "PipelineWorkflow"
    assert d.start_order() == ["db", "api", "worker", "web"]
    assert d.services[0].command == ["python3", "db.py", "--port", "5000"]
    assert d.services[0].cwd == "/srv/shop" and d.services[2].cwd is None
    assert [s.runtime for s in d.services] == ["process", "process", "docker", "docker"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("interval_s: 0", "services[db].health.interval_s: Input should be greater than 0"),
        ("tcp: nowhere", 'services[db].health.tcp: Value error, must be "host:port"'),
        ("bogus: 1", "services[db].health.bogus: Extra inputs are not permitted"),
        ("http: http://x/", "services[db].health: Value error, give exactly one of"),
    ],
)
def test_errors_name_the_bad_field(change: str, message: str) -> None:
    text = GOOD.replace('{tcp: "127.0.0.1:5000"}', "{tcp: '127.0.0.1:5000', " + change + "}")
    if change.startswith("tcp"):
        text = text.replace("tcp: '127.0.0.1:5000', ", "")
    with pytest.raises(DefinitionError) as err:
        parse_definition(text, source="shop.yaml")
    assert str(err.value).startswith("shop.yaml: ") and message in str(err.value)


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (
            "[{name: a, command: x, depends_on: [c]}, {name: b, command: x, depends_on: [a]},"
            " {name: c, command: x, depends_on: [b]}]",
            "services.a.depends_on: dependency cycle a → c → b → a",
        ),
        ("[{name: a, command: x, depends_on: [a]}]", "a service cannot need itself"),
        ("[{name: a, command: x, depends_on: [zz]}]", "services.a.depends_on: unknown"),
        ("[{name: a, command: x}, {name: a, image: y}]", "names must be unique"),
        ("[{name: a}]", "services[a]: Value error, give an `image` (docker) or a `command`"),
        ("[{name: a, command: x, ports: {'80': 80}}]", "`ports` and `volumes` are for `image`"),
        ("[{name: A!, command: x}]", "services[A!].name: String should match pattern"),
        ("[]", "services: List should have at least 1 item"),
    ],
)
def test_dag_and_runtime_errors(services: str, message: str) -> None:
    with pytest.raises(DefinitionError) as err:
        parse_definition(f"name: p\nservices: {services}\n")
    assert message in str(err.value)


def test_not_yaml_or_not_a_mapping() -> None:
    with pytest.raises(DefinitionError, match="not valid YAML"):
        parse_definition("name: [unclosed")
    with pytest.raises(DefinitionError, match="expected a mapping"):
        parse_definition("- just a list")


def test_shipped_and_configured_definitions(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nservices: []\n")
    known, problems = known_definitions(
        Settings().with_kind(PipelineSettings(dirs=[REPO / "examples" / "pipelines", tmp_path]))
    )
    assert {"logs", "demo"} <= set(known)
    logs = known["logs"][1]
    assert logs.workflow == "LogsPipelineWorkflow" and logs.queue == "logs-queue"
    assert logs.start_order() == ["otel-collector", "loki", "grafana"]
    assert logs.service("loki").health.http == "http://127.0.0.1:3100/ready"
    assert len(problems) == 1 and "bad.yaml" in problems[0]
    demo = load_definition(REPO / "examples" / "pipelines" / "demo.yaml")
    assert demo.service("store").cwd == str(REPO / "examples" / "pipelines")
