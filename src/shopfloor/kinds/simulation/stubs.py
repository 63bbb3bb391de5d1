"""The simulation kind's activity contract (see `shopfloor.contracts`): light, models only."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.simulation.models import SimulationRequest, SimulationResult

RUN_SIMULATION = ActivityStub[SimulationRequest, SimulationResult](
    "run_simulation", SimulationRequest, SimulationResult
)
