"""The one heartbeat-while-waiting helper: beats at once and then regularly, stops after."""

from __future__ import annotations

import asyncio

from temporalio.testing import ActivityEnvironment

from shopfloor.heartbeats import heartbeating, waiting_for


async def test_heartbeats_while_the_block_runs_and_stops_after() -> None:
    beats: list[tuple] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    async def waits() -> str:
        async with heartbeating(waiting_for("the gateway"), every_s=0.05):
            await asyncio.sleep(0.18)
        return "done"

    assert await env.run(waits) == "done"
    count = len(beats)
    assert 3 <= count <= 5
    assert beats[0] == ({"waiting_for": "the gateway", "elapsed_s": 0},)
    await asyncio.sleep(0.12)
    assert len(beats) == count  # no beat after the block


async def test_outside_an_activity_the_block_still_runs() -> None:
    async with heartbeating("starting x", every_s=0.01):
        await asyncio.sleep(0.03)
