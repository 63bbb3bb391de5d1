"""Whose processes are whose, with real processes and in-process workers on a real Temporal:

- two stacks (data dirs, task-queue prefixes, hosts of their own) running pipelines of the same
  name: each service a uid of its own from the machine-wide pool, never shared; terminating and
  restarting one stack's pipeline stops that stack's orphans and nothing of the other's;
- the same pipeline still running under another job is no leftover: a second job's start is
  refused naming the first, whose services are untouched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.definition import validate_definition
from shopfloor.kinds.pipeline.models import (
    PipelineDefinition,
    PipelineInput,
    PipelineResult,
    PipelineStatus,
)
from shopfloor.registry import kinds
from shopfloor.settings import Settings
from shopfloor.worker import build_workers, kind_resources
from tests.pipelines.conftest import pipeline_settings
from tests.pipelines.support import alive, kill_marked, marked, past_starting, service


@pytest.fixture
async def two_stacks(
    env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Settings]]:
    stacks = (pipeline_settings(tmp_path / "a"), pipeline_settings(tmp_path / "b"))
    async with AsyncExitStack() as exits:
        for settings in stacks:
            plans = await exits.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
            for worker in build_workers(env.client, settings, plans):
                await exits.enter_async_context(worker)
        yield stacks


def _same_name(name: str) -> PipelineDefinition:
    """A pipeline named `name` with two services on ports of its own."""
    return validate_definition(
        {
            "name": name,
            "supervise_every_s": 0.5,
            "services": [service("one"), service("two", needs=("one",))],
        }
    )


async def _start(
    env: WorkflowEnvironment, s: Settings, d: PipelineDefinition, job_id: str
) -> WorkflowHandle[Any, PipelineResult]:
    return await env.client.start_workflow(
        "PipelineWorkflow",
        PipelineInput(definition=d),
        id=job_id,
        task_queue=s.task_queue_prefix + "pipeline-task-queue",
        result_type=PipelineResult,
    )


def _pids(st: PipelineStatus) -> dict[str, int]:
    return {x.name: x.pid for x in st.services if x.pid is not None}


async def test_two_stacks_with_a_pipeline_of_the_same_name_share_neither_uids_nor_processes(
    env: WorkflowEnvironment, two_stacks: tuple[Settings, Settings]
) -> None:
    a, b = two_stacks
    name = f"same{uuid.uuid4().hex[:6]}"
    da, db = _same_name(name), _same_name(name)
    ha = await _start(env, a, da, f"{a.task_queue_prefix}pipeline-{name}")
    hb = await _start(env, b, db, f"{b.task_queue_prefix}pipeline-{name}")
    sa, sb = await past_starting(ha), await past_starting(hb)
    try:
        assert sa.phase == sb.phase == "running", (sa, sb)
        pa, pb = _pids(sa), _pids(sb)
        uids = [_procfs.uid_of(pid) for pid in [*pa.values(), *pb.values()]]
        pool = range(a.sandbox_uid_base, a.sandbox_uid_base + a.sandbox_uid_count)
        assert len(set(uids)) == 4 and all(u in pool for u in uids), uids

        # Stack b's run is terminated (its services keep running), then started again: its
        # start stops b's orphans, and nothing of a's pipeline of the same name.
        await hb.terminate(reason="seed 004 stop.py")
        assert all(alive(pid) for pid in pb.values())
        hb = await _start(env, b, db, f"{b.task_queue_prefix}pipeline-{name}")
        sb = await past_starting(hb)
        assert sb.phase == "running", sb
        assert not any(alive(pid) for pid in pb.values())
        for x in sb.services:
            assert len(x.leftovers_stopped) == 1 and f"pid {pb[x.name]}" in x.leftovers_stopped[0]
        await asyncio.sleep(1.5)  # a few supervision ticks
        sa = await ha.query("status", result_type=PipelineStatus)
        assert _pids(sa) == pa and all(alive(pid) for pid in pa.values())
        assert all(
            (x.state, x.restarts, x.leftovers_stopped) == ("healthy", 0, []) for x in sa.services
        ), sa
        # One process per service per stack, in the process table.
        for service_name in ("one", "two"):
            leaders = sorted(p.pid for p in marked(da, service_name) if p.sid == p.pid)
            assert leaders == sorted([pa[service_name], _pids(sb)[service_name]]), service_name
        uids = [_procfs.uid_of(pid) for pid in [*pa.values(), *_pids(sb).values()]]
        assert len(set(uids)) == 4 and all(u in pool for u in uids), uids
    finally:
        try:
            for handle in (ha, hb):
                await handle.signal("stop")
                await handle.result()
            assert marked(da, "one") == [] and marked(da, "two") == []
        finally:
            kill_marked(name)  # whatever a failed test left


async def test_the_same_pipeline_running_under_another_job_is_not_a_leftover(
    env: WorkflowEnvironment, pipeline_worker: Settings
) -> None:
    s = pipeline_worker
    d = _same_name(f"twice{uuid.uuid4().hex[:6]}")
    first = await _start(env, s, d, f"{s.task_queue_prefix}first-{d.name}")
    st = await past_starting(first)
    assert st.phase == "running", st
    pids = _pids(st)
    second = await _start(env, s, d, f"{s.task_queue_prefix}second-{d.name}")
    try:
        with pytest.raises(WorkflowFailureError) as failed:
            await second.result()
        message = str(failed.value.cause)
        assert f"already running on this host as job '{first.id}'" in message, message
        st = await first.query("status", result_type=PipelineStatus)
        assert _pids(st) == pids and all(alive(pid) for pid in pids.values())
        assert all(x.state == "healthy" and x.restarts == 0 for x in st.services), st
    finally:
        try:
            await first.signal("stop")
            await first.result()
            assert marked(d, "one") == [] and marked(d, "two") == []
        finally:
            kill_marked(d.name)  # whatever a failed test left
