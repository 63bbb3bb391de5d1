"""A pipeline outlives its workers: SIGKILL the worker in the middle of a start, and the next
one brings the pipeline up with exactly one process per service; SIGKILL that one too, and a
third still stops everything, down to a child that left its service's session (the cgroup)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from shopfloor.devserver import DevServer
from shopfloor.kinds.pipeline.models import PipelineStatus
from shopfloor.kinds.pipeline.process import CGROUP_ROOT
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.settings import Settings
from tests.helpers import Stack, wait_until
from tests.pipelines.support import alive, definition, events, marked, service, start


def leaders(procs: list) -> list:  # noqa: ANN001
    """The service's own process: leads its session, its parent is not one of its own."""
    pids = {p.pid for p in procs}
    return [p for p in procs if p.sid == p.pid and p.ppid not in pids]


async def test_worker_killed_mid_start_then_before_stop(
    env: WorkflowEnvironment, dev_server: DevServer, tmp_path: Path
) -> None:
    host = f"crash-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={"SHOPFLOOR_PIPELINE_HOST": host},
    )
    settings = Settings(
        data_dir=tmp_path / "data", task_queue_prefix=stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"]
    )
    d = definition(
        service("a"),
        service("b", needs=("a",), healthy_after=3.0, escapee=True),
        service("c", needs=("b",)),
        supervise_every_s=1,
    )
    try:
        first = stack.start_worker("--kind", "pipeline")
        handle = await start(env.client, settings, d)
        # b has started and is not yet healthy: the worker dies in the middle of its start.
        wait_until(lambda: events(settings, d, "b").get("started"), what="b to start")
        first.sigkill()

        stack.start_worker("--kind", "pipeline")

        async def phase() -> PipelineStatus:
            return await handle.query("status", result_type=PipelineStatus)

        for _ in range(600):
            st = await phase()
            if st.phase == "running":
                break
            await asyncio.sleep(0.1)
        assert st.phase == "running", st
        # Exactly one process per service (b also has its escaped child), from /proc.
        for name in "abc":
            procs = marked(d, name)
            assert len(leaders(procs)) == 1, (name, procs)
            assert len(procs) == (2 if name == "b" else 1), (name, procs)
        assert len(events(settings, d, "b")["started"]) == 1  # started once, not twice
        b_log = settings.of(PipelineSettings).runtime_dir(settings.data_dir) / d.name / "b.log"
        escapee = int(
            next(ln for ln in b_log.read_text()
                 .splitlines() if ln.startswith("escapee")).split()[1]
        )  # fmt: skip
        assert alive(escapee)

        stack.workers[-1].sigkill()
        stack.start_worker("--kind", "pipeline")
        await handle.signal("stop")
        result = await handle.result()
    finally:
        stack.stop()
    assert [s.name for s in result.stopped] == ["c", "b", "a"]
    assert all(marked(d, name) == [] for name in "abc")
    assert not alive(escapee)  # it left b's session; b's cgroup still held it
    if CGROUP_ROOT.exists():
        assert list(CGROUP_ROOT.glob(f"{d.name}.*")) == []
