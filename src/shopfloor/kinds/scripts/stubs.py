"""The script kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.scripts.models import ScriptInput, ScriptResult

RUN_SCRIPT = ActivityStub[ScriptInput, ScriptResult]("run_script", ScriptInput, ScriptResult)
