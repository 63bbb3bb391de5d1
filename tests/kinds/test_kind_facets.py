"""The built-in kinds' facets on their own: what the shared metrics and offload call."""

from __future__ import annotations

import base64

from prometheus_client import CollectorRegistry

from shopfloor.observability.metrics import ActivityObservers, _kind_table, kill_reason
from shopfloor.registry import kinds


def test_kill_reasons_are_read_by_each_kind() -> None:
    table = _kind_table(list(kinds().values()))
    script, simulation = table["ScriptExecutionWorkflow"], table["SimulationWorkflow"]
    assert kill_reason(script, {"killed_reason": "memory"}) == "memory"
    assert kill_reason(script, {"exit_code": 1, "killed_reason": None}) is None
    assert kill_reason(simulation, {"outcome": "FAIL", "reason": "timeout: 30 s"}) == "timeout"
    assert kill_reason(simulation, {"outcome": "FAIL", "reason": "fell over"}) is None
    assert kill_reason(table["PipelineWorkflow"], {"killed_reason": "memory"}) is None
    assert kill_reason(None, {"killed_reason": "memory"}) is None


def _put(name: str, data: bytes) -> str:
    return f"artifact://uploads/{len(data)}/{name}"


def test_offload_moves_what_each_kind_says() -> None:
    script = kinds()["script"].presentation.offload
    simulation = kinds()["simulation"].presentation.offload
    assert script is not None and simulation is not None
    raw = base64.b64encode(b"x" * 30).decode()
    data = {"source": "#" * 100, "files": [{"path": "d/a.bin", "content": raw, "base64": True}]}
    assert script(data, _put, 16)
    assert data["source_uri"] == "artifact://uploads/100/script.py" and "source" not in data
    assert data["files"][0] == {"path": "d/a.bin", "content": "", "base64": False,
                                "uri": "artifact://uploads/30/a.bin"}  # fmt: skip
    part = {"label": "cube", "format": "stl", "data_base64": base64.b64encode(b"s" * 30).decode()}
    scene = {"scene": {"kind": "geometry", "parts": [part]}}
    assert simulation(scene, _put, 16)
    assert scene["scene"] == {"kind": "uri", "uri": "artifact://uploads/30/part.stl",
                              "format": "stl", "label": "cube", "fixed": False}  # fmt: skip
    small = {"source": "print(1)"}
    assert not script(small, _put, 1024) and small == {"source": "print(1)"}


def test_kinds_feed_their_own_instruments() -> None:
    registry = CollectorRegistry()
    observers = ActivityObservers.on(registry)
    ref = {"pipeline": "p1", "service": {"name": "s1"}, "run_token": "t"}
    observers.observe("pipeline_start_service", [ref], {"adopted": False}, None)
    observers.observe("run_agent_step", [{"agentType": "mock-agent"}], {"status": "OK"}, None)
    observers.observe("run_script", [{"source": "x"}], {"exit_code": 0}, None)
    labels = {"pipeline": "p1", "service": "s1"}
    assert registry.get_sample_value("shopfloor_pipeline_service_starts_total", labels) == 1
    calls = {"provider": "mock", "status": "OK"}
    assert registry.get_sample_value("shopfloor_agent_calls_total", calls) == 1
