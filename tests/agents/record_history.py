"""Records the history that `test_replay.py` replays: run it when a workflow change is meant
to be compatible, check the JSON in, and keep the old files (they are what running jobs have).

    .venv/bin/python -m tests.agents.record_history tests/agents/histories/NAME.json

It runs a multi-step goal through most of what the workflow does: a rate-limited reply (a
durable timer), a retried step, pause/resume signals, an instruction update, the state query
and artifact storage.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.agents.models import AddInstruction
from tests.agents.support import agent_worker

CONFIG = {
    "goalId": "recorded-goal",
    "specConfig": {"task": "name three colours", "maxSteps": 2},
    "agentType": "mock-agent",
    "agentConfig": {
        "delayMs": 200,
        "failures": [
            {"workKind": "plan", "attempt": 1, "status": "RATE_LIMITED", "retryAfterS": 1}
        ],
    },
    "maxIterations": 20,
}


async def record(out: Path) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=shutil.which("temporal")
        or str(Path(sys.executable).with_name("temporal")),
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            async with agent_worker(env.client, Path(tmp)) as w:
                handle = await w.start(CONFIG, workflow="multiStepWorkflow")
                while len(w.acts.mock.calls) < 2:
                    await asyncio.sleep(0.05)
                await handle.signal("pause")
                await handle.execute_update(
                    "add_instruction", AddInstruction(text="be brief"), result_type=dict
                )
                await asyncio.sleep(0.5)
                await handle.query("state")
                await handle.signal("resume")
                result = await handle.result()
                print(result.status, [s.id for s in result.steps])
        history = await handle.fetch_history()
    out.write_text(history.to_json())
    print(f"wrote {out} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1])))
