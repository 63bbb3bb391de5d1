"""Phased definitions: what is accepted, and a clear error naming the problem otherwise."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shopfloor.kinds.phased.kind import _input_from_file, check_job_steps
from shopfloor.kinds.phased.models import PhasedDefinition, PhasedInput
from shopfloor.kinds.phased.references import resolve
from shopfloor.kinds.poetry_research.workflows import poetry_research_definition
from shopfloor.registry import InputRejected
from shopfloor.settings import Settings
from tests.helpers import Stack
from tests.phased.conftest import EXAMPLES


def definition(*steps: dict) -> dict:
    return {"name": "t", "steps": list(steps)}


TURN = {"id": "a", "type": "agent_turn", "job_id": "x"}


@pytest.mark.parametrize(
    ("steps", "needle"),
    [
        ([{"id": "a", "type": "sleep", "duration": "1s"}], "sleep"),  # unknown step type
        ([{"id": "a", "type": "delay", "duration": "2 hours"}], "invalid duration '2 hours'"),
        ([{"id": "a", "type": "delay", "duration": "-5s"}], "invalid duration"),
        ([{"id": "a", "type": "delay", "duraton": "5s"}], "duraton"),  # a typo is no default
        ([TURN, {**TURN}], "duplicate step id 'a'"),
        (
            [{**TURN, "job_id": "${steps.b.result.text}"}, {**TURN, "id": "b"}],
            "refers to 'b', which does not end before 'a' starts",
        ),
        ([{**TURN, "job_id": "${steps.a.result.text}"}], "refers to 'a', which does not end"),
        ([{**TURN, "job_id": "${steps.nope.result}"}], "unknown step 'nope'"),
        (
            [
                {
                    "id": "p",
                    "type": "parallel",
                    "steps": [TURN, {**TURN, "id": "b", "job_id": "${steps.a.result.text}"}],
                }
            ],
            "refers to 'a', which does not end before 'b'",
        ),
        (
            [{"id": "h", "type": "http", "url": "http://x", "headers": {"Authorization": "k"}}],
            "secret",
        ),
        ([{"id": "h", "type": "http", "url": "file:///etc/passwd"}], "url"),
        ([{"id": "a b", "type": "delay", "duration": 1}], "invalid step id"),
    ],
)
def test_bad_definitions_say_what_is_wrong(steps: list, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        PhasedDefinition.model_validate(definition(*steps))
    assert needle in str(err.value)


def test_job_steps_name_real_kinds_with_valid_input() -> None:
    settings = Settings()
    bad_kind = PhasedInput(definition=definition({"id": "j", "type": "job", "kind": "nope"}))
    with pytest.raises(InputRejected, match="step 'j': unknown job kind 'nope'"):
        check_job_steps(bad_kind, settings)
    bad_input = PhasedInput(
        definition=definition({"id": "j", "type": "job", "kind": "script", "input": {}})
    )
    with pytest.raises(InputRejected, match="step 'j': invalid script input"):
        check_job_steps(bad_input, settings)


def test_shipped_examples_parse_and_match_the_seed_workflow() -> None:
    example = _input_from_file(EXAMPLES / "poetry_research.yaml", {}).definition
    built_in = poetry_research_definition(timedelta(hours=2))
    assert example.model_dump(exclude={"description"}) == built_in.model_dump(
        exclude={"description"}
    )
    jobs = _input_from_file(EXAMPLES / "script_then_simulation.yaml", {})
    check_job_steps(jobs, Settings())
    assert [s.kind for s in jobs.definition.steps] == ["script", "simulation"]


def test_references_resolve_whole_values_and_text() -> None:
    done = {"a": {"result": {"n": 3, "items": ["x", "y"], "text": "hi"}}}
    assert resolve("${steps.a.result.n}", done) == 3
    assert resolve("n=${steps.a.result.n}, ${steps.a.result.items.1}", done) == "n=3, y"
    assert resolve({"k": ["${steps.a.result.text}"]}, done) == {"k": ["hi"]}
    with pytest.raises(ValueError, match="does not resolve"):
        resolve("${steps.a.result.missing}", done)


def test_bad_definitions_over_http_and_cli(stack: Stack, tmp_path: Path) -> None:
    r = stack.http.post(
        "/jobs/phased",
        json={"definition": definition({"id": "a", "type": "delay", "duration": "soon"})},
    )
    assert r.status_code == 422 and "invalid duration 'soon'" in r.text, r.text
    r = stack.http.post(
        "/jobs/phased",
        json={"definition": definition({"id": "j", "type": "job", "kind": "nope"})},
    )
    assert r.status_code == 422 and "unknown job kind 'nope'" in r.json()["detail"]

    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nsteps:\n  - {id: a, type: delay, duration: 2 hours}\n")
    env = {**stack.env, "SHOPFLOOR_CONTROLLER_URL": stack.url}
    proc = subprocess.run(
        [sys.executable, "-m", "shopfloor", "submit", "phased", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "invalid duration '2 hours'" in proc.stderr, proc.stderr
