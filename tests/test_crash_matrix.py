"""A short run of the crash matrix (benchmarks/crash_matrix.py): script, agent and phased jobs
and a pipeline while workers, the controller and the Temporal dev server are SIGKILLed and
restarted; nothing is lost, no job has two results, the pipeline ends with one live process per
service (then none, stopped), every job's `ShopfloorOutcome` is `passed` (asserted when the
server has that search attribute; the report says when it has not), and the client never sees
a 5xx other than a 503 while a part is down."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from tests.helpers import REPO


def _crash_matrix_module():
    path = REPO / "benchmarks" / "crash_matrix.py"
    spec = importlib.util.spec_from_file_location("crash_matrix", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_matrix"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_crash_matrix_short_run(tmp_path: Path) -> None:
    cm = _crash_matrix_module()
    effects = cm.effects_root()  # outside /tmp: a sandboxed script may get a private /tmp
    try:
        report = cm.CrashMatrix(
            root=tmp_path,
            effects_dir=effects,
            jobs=20,
            agents=4,
            phased=4,
            pipeline=True,
            kills_per_part=3,
            workers=2,
            seed=14,
            gap_s=(0.5, 2.0),
            deadline_s=420,
            log=lambda _: None,
        ).run()
    finally:
        shutil.rmtree(effects, ignore_errors=True)
    print(report.table())

    for part in cm.PARTS:
        kills = report.kills_of(part)
        assert len(kills) == 3, report.table()
        # Each kill was followed by a job done end to end (a probe through the controller).
        assert all(k.recovery_s is not None for k in kills), report.table()
    assert report.jobs == 20 + 4 + 4 + 1 and report.probes == 9
    rows = report.kinds
    assert (rows["script"].jobs, rows["agent"].jobs) == (20 + 9, 4), report.table()
    assert (rows["phased"].jobs, rows["pipeline"].jobs) == (4, 1), report.table()
    for row in rows.values():  # each kind: none lost, no duplicate result
        assert row.lost == [] and row.completed == row.jobs, report.table()
        assert row.duplicate_results == [], report.table()
    # The kills fell while they ran: the pipeline runs through all of them, and agent and
    # phased jobs (spread over the first 80% of them, ~10-14 s each) through some.
    assert rows["pipeline"].kills_during == {p: 3 for p in cm.PARTS}, report.table()
    for kind in ("agent", "phased"):
        assert sum(rows[kind].kills_during.values()) >= 2, report.table()
    assert report.lost == [], report.table()
    assert report.completed == report.jobs + report.probes
    assert report.duplicate_results == [], report.table()
    # The outcome attribute: asserted whenever the server has it registered; the report says
    # "not available" otherwise (a server without issue 22's search attributes).
    assert "outcome attribute" in report.table()
    if report.outcome_available:
        assert report.wrong_outcomes == [], report.table()
        assert all(sum(r.outcomes.values()) == r.jobs for r in rows.values()), report.table()
    else:
        assert "not available" in report.table()
    assert report.unexpected_5xx == 0, report.table()
    assert report.unavailable_while_up == 0, report.table()
    assert report.errors == [], report.table()
    # Every job's script ran (its side effect is there); more than once only after a kill.
    assert all(n >= 1 for n in report.side_effects.values()), report.table()
