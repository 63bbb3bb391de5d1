"""An in-process pipeline worker on queues of its own (prefix and host name per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import docker
import pytest
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.registry import kinds
from shopfloor.settings import Settings
from shopfloor.worker import build_workers, kind_resources


def pipeline_settings(tmp_path: Path, **extra: object) -> Settings:
    """Settings of a test worker; `extra` are the pipeline kind's own (PipelineSettings)."""
    tag = uuid.uuid4().hex[:8]
    own = PipelineSettings(host=f"test-{tag}", **extra)  # type: ignore[arg-type]
    return Settings(data_dir=tmp_path / "data", task_queue_prefix=f"tq-{tag}-").with_kind(own)


@pytest.fixture
async def pipeline_worker(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Settings]:
    settings = pipeline_settings(tmp_path)
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        yield settings


@pytest.fixture
def sdk_threads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For every HTTP request the SDK sends: was an event loop running in its thread?"""
    on_loop: list[bool] = []
    send = docker.APIClient.send

    def watched(self, request, **kwargs):  # noqa: ANN001, ANN003, ANN202
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return send(self, request, **kwargs)

    monkeypatch.setattr(docker.APIClient, "send", watched)
    return on_loop
