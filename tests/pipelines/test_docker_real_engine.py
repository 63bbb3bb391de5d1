"""The docker runtime's properties against a real Docker engine, when there is one.

Runs only when DOCKER_HOST names an engine (`DOCKER_HOST=unix:///var/run/docker.sock pytest
tests/pipelines/test_docker_real_engine.py`); no engine can run on the machines this project
is built on, so there the fake Engine API of test_docker_runtime.py stands in, and these are
skipped. The image is small and public: SHOPFLOOR_TEST_DOCKER_IMAGE (default busybox).
They check the same properties: labels, an existing container adopted after a crash instead
of a second one, a stopped container restarted, health from a TCP check, reverse stop, and no
SDK call on the event loop.
"""

from __future__ import annotations

import os
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import docker
import pytest
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.pipeline.docker_runtime import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_SERVICE,
    DockerRuntime,
    container_name,
)
from shopfloor.kinds.pipeline.models import ServiceRef, ServiceSpec
from shopfloor.processes import free_port
from shopfloor.registry import kinds
from shopfloor.worker import build_workers, kind_resources
from tests.pipelines.conftest import pipeline_settings
from tests.pipelines.support import definition, past_starting, start

pytestmark = pytest.mark.skipif(
    not os.environ.get("DOCKER_HOST"), reason="no Docker engine (set DOCKER_HOST to run these)"
)
IMAGE = os.environ.get("SHOPFLOOR_TEST_DOCKER_IMAGE", "busybox:latest")


def client() -> docker.DockerClient:
    return docker.DockerClient(base_url=os.environ["DOCKER_HOST"])


def ref(pipeline: str, name: str, token: str = "run1") -> ServiceRef:
    spec = ServiceSpec(name=name, image=IMAGE, command=["sleep", "3600"])
    return ServiceRef(pipeline=pipeline, run_token=token, service=spec)


async def test_labels_adoption_restart_and_stop_on_a_real_engine(sdk_threads) -> None:
    pipeline = f"t{uuid.uuid4().hex[:8]}"
    rt = DockerRuntime(client)
    try:
        handle = await rt.start(ref(pipeline, "db"))
        real = client().containers.get(handle.container_id)
        assert real.name == container_name(ref(pipeline, "db")) and real.status == "running"
        assert real.labels[LABEL_PIPELINE] == pipeline and real.labels[LABEL_SERVICE] == "db"
        assert real.labels[LABEL_RUN] == "run1"
        # A new worker (nothing in memory) retrying the start adopts the container.
        again = await DockerRuntime(client).start(ref(pipeline, "db"))
        assert again.adopted and again.container_id == handle.container_id
        # It died: a retried start restarts that same container.
        real.kill()
        assert not (await rt.probe(ref(pipeline, "db"))).alive
        restarted = await DockerRuntime(client).start(ref(pipeline, "db"))
        assert restarted.container_id == handle.container_id
        assert client().containers.get(handle.container_id).status == "running"
        assert (await rt.stop(ref(pipeline, "db"))).was_running
        assert not client().containers.list(
            all=True, filters={"label": f"{LABEL_PIPELINE}={pipeline}"}
        )
    finally:
        for c in client().containers.list(
            all=True, filters={"label": f"{LABEL_PIPELINE}={pipeline}"}
        ):
            c.remove(force=True)
        await rt.aclose()
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"


async def test_pipeline_on_a_real_engine_starts_gated_and_stops_in_reverse(
    env: WorkflowEnvironment, tmp_path: Path, sdk_threads
) -> None:
    settings = pipeline_settings(tmp_path, pipeline_docker_host=os.environ["DOCKER_HOST"])
    a, b = free_port(), free_port()
    d = definition(
        {"name": "first", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080"],
         "ports": {"8080/tcp": a}, "health": {"tcp": f"127.0.0.1:{a}", "interval_s": 0.2}},
        {"name": "second", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080"],
         "ports": {"8080/tcp": b}, "depends_on": ["first"],
         "health": {"tcp": f"127.0.0.1:{b}", "interval_s": 0.2}},
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        handle = await start(env.client, settings, d)
        st = await past_starting(handle)
        assert st.phase == "running", st
        await handle.signal("stop")
        result = await handle.result()
    assert [s.name for s in result.stopped] == ["second", "first"]
    assert not client().containers.list(all=True, filters={"label": f"{LABEL_PIPELINE}={d.name}"})
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"
