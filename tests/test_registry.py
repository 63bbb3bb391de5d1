"""The registry stays light: the controller and every CLI call import it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import REPO

FORBIDDEN = re.compile(
    r"^(shopfloor\.sandbox|shopfloor\.usercode|shopfloor\.worker|shopfloor\.kinds\.\w+\.activities"
    r"|shopfloor\.kinds\.\w+\.workflows|ctypes|temporalio\.worker|build123d|mujoco)(\.|$)"
)


def test_importing_the_registry_loads_no_worker_code() -> None:
    code = "import shopfloor.registry; shopfloor.registry.kinds()"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    modules = [
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    # The check sees the kinds' own modules at all (descriptors import their models).
    assert {"shopfloor.kinds.scripts.models", "shopfloor.kinds.simulation.models"} <= set(modules)
    loaded = [m for m in modules if FORBIDDEN.match(m)]
    assert loaded == [], f"importing the registry loaded worker-side modules: {loaded}"


def test_importing_the_registry_registers_no_exit_handlers() -> None:
    code = (
        "import atexit, pydantic, pydantic_settings, temporalio; before = atexit._ncallbacks()\n"
        "import shopfloor.registry; shopfloor.registry.kinds()\n"
        "print(atexit._ncallbacks() - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_no_sdk_private_names_in_the_code() -> None:
    private = re.compile(r"temporalio(\.\w+)*\._\w+|\b_Definition\b")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "src").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []


def test_seed_workflow_names_belong_to_their_kind() -> None:
    from shopfloor.registry import kind_for_workflow_type

    for workflow_type, kind in [
        ("ScriptExecutionWorkflow", "script"),
        ("SimulationWorkflow", "simulation"),
        ("helloWorkflow", "agent"),
        ("multiStepWorkflow", "agent"),
        ("agentCoordinatorWorkflow", "agent"),
        ("PoetryResearchWorkflow", "poetry-research"),
        ("PhasedWorkflow", "phased"),
    ]:
        found = kind_for_workflow_type(workflow_type)
        assert found is not None and found.name == kind, workflow_type
    assert kind_for_workflow_type("SomethingElse") is None


def test_each_kind_declares_what_its_workflows_define() -> None:
    """The contract is declared once, in `kind.py`; the workflow decorators must match it:
    the entry workflow's type, signals, queries and updates, and every workflow's type."""
    from temporalio.workflow import _Definition

    from shopfloor.registry import kinds
    from tests.kinds.memo.kind import KIND as MEMO
    from tests.kinds.steerable.kind import KIND as STEERABLE

    for kind in [*kinds().values(), MEMO, STEERABLE]:
        defined = [_Definition.must_from_class(w) for w in kind.load_workflows()]
        entry = defined[0]
        assert entry.name == kind.workflow_type, kind.name
        assert {d.name for d in defined} <= {kind.workflow_type, *kind.other_workflow_types}
        assert set(entry.signals) == {s.name for s in kind.signals}, kind.name
        assert set(entry.queries) == {q.name for q in kind.queries}, kind.name
        assert set(entry.updates) == {u.name for u in kind.updates}, kind.name
