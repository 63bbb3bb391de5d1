"""PipelineWorkflow with real processes (process runtime) and an in-process worker: order and
health gating, parallel branches, rollback, restarts, the restart update, reverse stop."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.pipeline import _procfs
from shopfloor.kinds.pipeline.models import (
    PipelineStatus,
    RestartService,
    ServiceRestarted,
)
from shopfloor.settings import Settings
from tests.pipelines.support import alive, definition, events, log_of, marked, service, start


async def status_of(handle: WorkflowHandle) -> PipelineStatus:
    return await handle.query("status", result_type=PipelineStatus)


async def wait_for(handle: WorkflowHandle, check, *, timeout_s: float = 30) -> PipelineStatus:  # noqa: ANN001
    for _ in range(int(timeout_s / 0.1)):
        st = await status_of(handle)
        if check(st):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last status: {st.model_dump_json(indent=1)}")


def running(st: PipelineStatus) -> bool:
    return st.phase == "running"


async def test_order_gating_parallel_branches_and_reverse_stop(
    env: WorkflowEnvironment, pipeline_worker: Settings
) -> None:
    s = pipeline_worker
    # a → (b ‖ c) → d: b and c only need a, d needs both.
    d = definition(
        service("a", healthy_after=0.6),
        service("b", needs=("a",), healthy_after=1.0),
        service("c", needs=("a",), healthy_after=1.0),
        service("d", needs=("b", "c")),
    )
    handle = await start(env.client, s, d)
    st = await wait_for(handle, running)
    assert [x.state for x in st.services] == ["healthy"] * 4
    ev = {name: events(s, d, name) for name in "abcd"}
    a, b, c, dd = ev["a"], ev["b"], ev["c"], ev["d"]
    # Gating: nothing starts before what it needs is healthy (the services' own clocks).
    assert a["healthy"][0] < b["started"][0] and a["healthy"][0] < c["started"][0]
    assert max(b["healthy"][0], c["healthy"][0]) < dd["started"][0]
    # Parallel branches: b and c were both starting at the same time.
    assert max(b["started"][0], c["started"][0]) < min(b["healthy"][0], c["healthy"][0])

    # Contained: each service leads its own session and process group, under a uid of its own
    # leased from the pool of run uids.
    pids = {x.name: x.pid for x in st.services}
    uids = {name: _procfs.uid_of(pid) for name, pid in pids.items()}
    pool = range(s.sandbox_uid_base, s.sandbox_uid_base + s.sandbox_uid_count)
    for name, pid in pids.items():
        proc = _procfs.stat(pid)
        assert proc is not None and proc.pgid == pid and proc.sid == pid, name
        assert uids[name] in pool, name
    assert len(set(uids.values())) == len(uids)

    await handle.signal("stop")
    result = await handle.result()
    assert [x.name for x in result.stopped] == ["d", "c", "b", "a"]
    assert all(x.was_running for x in result.stopped)
    assert all(x.state == "stopped" for x in result.services)
    stopping = [events(s, d, name)["stopping"][0] for name in "dcba"]
    assert stopping == sorted(stopping)  # each got SIGTERM after the one before was gone
    assert not any(alive(pid) for pid in pids.values())
    assert all(marked(d, name) == [] for name in "abcd")


async def test_never_healthy_rolls_back_and_fails_with_the_reason(
    env: WorkflowEnvironment, pipeline_worker: Settings
) -> None:
    s = pipeline_worker
    d = definition(
        service("store"),
        service("api", needs=("store",), never_healthy=True, start_timeout_s=2),
        service("web", needs=("api",)),
    )
    handle = await start(env.client, s, d)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "service 'api' did not become healthy" in message
    assert "status 503, expected 200" in message  # its last health error
    assert "api: not ready yet" in message  # the tail of its log
    # Rolled back in reverse: api, then store; web never started.
    assert events(s, d, "api")["stopping"][0] < events(s, d, "store")["stopping"][0]
    assert log_of(s, d, "web") == ""
    assert all(marked(d, name) == [] for name in ("store", "api", "web"))
    st = await status_of(handle)
    assert st.phase == "failed" and {x.name: x.state for x in st.services} == {
        "store": "stopped",
        "api": "failed",
        "web": "pending",
    }


async def test_a_command_that_cannot_run_fails_the_start_with_its_log(
    env: WorkflowEnvironment, pipeline_worker: Settings
) -> None:
    broken = service("broken")
    broken["command"] = ["python3", "-c", "raise SystemExit('no config file')"]
    handle = await start(env.client, pipeline_worker, definition(broken))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "exited with code 1" in message and "no config file" in message


async def test_killed_service_is_restarted_and_counted_and_restart_update(
    env: WorkflowEnvironment, pipeline_worker: Settings
) -> None:
    s = pipeline_worker
    d = definition(service("db"), service("app", needs=("db",)), supervise_every_s=0.3)
    handle = await start(env.client, s, d)
    st = await wait_for(handle, running)
    old = {x.name: x.pid for x in st.services}
    _procfs_kill(old["db"])
    st = await wait_for(
        handle, lambda st: st.services[0].restarts == 1 and st.services[0].state == "healthy"
    )
    db = st.services[0]
    assert db.pid != old["db"] and alive(db.pid)
    assert len([p for p in marked(d, "db") if p.sid == p.pid]) == 1
    assert st.services[1].restarts == 0 and st.services[1].pid == old["app"]

    answer = await handle.execute_update(
        "restart_service", RestartService(service="app"), result_type=ServiceRestarted
    )
    assert answer.healthy and answer.restarts == 1 and answer.pid != old["app"]
    assert not alive(old["app"])
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(
            "restart_service", RestartService(service="nope"), result_type=ServiceRestarted
        )
    assert "no service 'nope'" in str(rejected.value.cause)
    await handle.signal("stop")
    await handle.result()
    assert marked(d, "db") == [] and marked(d, "app") == []


def _procfs_kill(pid: int) -> None:
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
