"""An in-process pipeline worker on queues of its own (prefix and host name per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from shopfloor.registry import kinds
from shopfloor.settings import Settings
from shopfloor.worker import build_workers, kind_resources


def pipeline_settings(tmp_path: Path, **extra: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=tmp_path / "data",
        task_queue_prefix=f"tq-{tag}-",
        pipeline_host=f"test-{tag}",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def pipeline_worker(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Settings]:
    settings = pipeline_settings(tmp_path)
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        yield settings
