"""The docker runtime end to end through the real `docker` SDK, against a fake Docker Engine
API server on 127.0.0.1: labels, pulls, idempotent create after a crash, health from the
container, reverse stop, and no blocking SDK call on the event loop. And the errors a person
can act on: no engine at the configured address, an image neither local nor pullable."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import docker
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from shopfloor.kinds.pipeline.docker_runtime import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_SERVICE,
    DockerEngineUnavailable,
    DockerRuntime,
    ImageUnavailable,
    connector,
    container_name,
    engine_address,
)
from shopfloor.kinds.pipeline.models import ServiceRef, ServiceSpec
from shopfloor.kinds.pipeline.process import stack_of
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.registry import kinds
from shopfloor.worker import build_workers, kind_resources
from tests.pipelines.conftest import pipeline_settings
from tests.pipelines.fake_docker import FakeDockerEngine
from tests.pipelines.support import definition, past_starting, start


@pytest.fixture
def engine() -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine() as fake:
        yield fake


def ref(name: str, token: str = "run1", image: str = "example/svc:1.0") -> ServiceRef:
    return ServiceRef(pipeline="shop", run_token=token, service=ServiceSpec(name=name, image=image))


def runtime(engine: FakeDockerEngine) -> DockerRuntime:
    return DockerRuntime(lambda: docker.DockerClient(base_url=engine.base_url))


async def test_start_is_idempotent_across_a_crash(
    engine: FakeDockerEngine, sdk_threads: list[bool]
) -> None:
    first = runtime(engine)
    handle = await first.start(ref("db"))
    assert not handle.adopted and engine.named("pull") == ["example/svc:1.0"]
    c = engine.containers[handle.container_id]
    assert c.running and c.name == container_name(ref("db"))
    assert c.labels == {LABEL_PIPELINE: "shop", LABEL_SERVICE: "db", LABEL_RUN: "run1"}

    # The worker dies; a new one (new client, nothing in memory) retries the start.
    again = await runtime(engine).start(ref("db"))
    assert again.adopted and again.container_id == handle.container_id
    assert len(engine.containers) == 1 and engine.named("create") == ["shopfloor-shop-db"]

    # Died between create and start: the retry starts the container it created.
    engine.crash("shopfloor-shop-db")
    probe = await runtime(engine).probe(ref("db"))
    assert not probe.alive and "exit code 137" in probe.error and "killed" in probe.log_tail
    restarted = await runtime(engine).start(ref("db"))
    assert restarted.container_id == handle.container_id and c.running
    assert engine.named("pull") == ["example/svc:1.0"]  # pulled once: it was there since

    # A container left by an earlier run of the pipeline is replaced, not adopted.
    newer = await runtime(engine).start(ref("db", token="run2"))
    assert newer.container_id != handle.container_id and len(engine.containers) == 1
    assert engine.containers[newer.container_id].labels[LABEL_RUN] == "run2"
    [said] = newer.leftovers  # and the start says so
    assert f"db container {handle.container_id[:12]} of an earlier run (run1)" == said

    assert (await first.stop(ref("db", token="run2"))).was_running
    assert engine.containers == {}
    assert not (await first.stop(ref("db", token="run2"))).was_running  # idempotent
    await first.aclose()
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"


async def test_health_from_the_container(engine: FakeDockerEngine) -> None:
    rt = runtime(engine)
    r = ref("loki", image="grafana/loki:healthcheck")
    await rt.start(r)
    first = await rt.probe(r)
    assert first.alive and not first.healthy and first.error == "container health: starting"
    for _ in range(5):
        probe = await rt.probe(r)
    assert probe.healthy


async def test_docker_pipeline_through_the_workflow(
    env: WorkflowEnvironment, engine: FakeDockerEngine, tmp_path: Path, sdk_threads: list[bool]
) -> None:
    settings = pipeline_settings(tmp_path, docker_host=engine.base_url)
    port = engine.server.server_address[1]
    d = definition(
        {"name": "otel-collector", "image": "otel/opentelemetry-collector:0.98.0",
         "health": {"tcp": f"127.0.0.1:{port}", "interval_s": 0.2}},
        {"name": "loki", "image": "grafana/loki:healthcheck", "depends_on": ["otel-collector"],
         "ports": {"3100/tcp": 3100}},
        {"name": "grafana", "image": "grafana/grafana", "depends_on": ["loki"],
         "env": {"GF_AUTH_ANONYMOUS_ENABLED": "true"}},
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        handle = await start(env.client, settings, d)
        st = await past_starting(handle)
        assert st.phase == "running", st
        assert all(s.state == "healthy" and s.container_id for s in st.services)
        # Named for the stack too: another stack's pipeline of this name is not this one.
        suffix = stack_of(settings.of(PipelineSettings).runtime_dir(settings.data_dir))[:8]
        assert engine.named("start") == [
            f"shopfloor-{d.name}-{n}-{suffix}" for n in d.start_order()
        ]
        for s in st.services:
            labels = engine.containers[s.container_id].labels
            assert labels[LABEL_PIPELINE] == d.name and labels[LABEL_SERVICE] == s.name
        assert set(engine.named("pull")) == {
            "otel/opentelemetry-collector:0.98.0",
            "grafana/loki:healthcheck",
            "grafana/grafana:latest",
        }
        await handle.signal("stop")
        result = await handle.result()
    expected = [f"shopfloor-{d.name}-{n}-{suffix}" for n in reversed(d.start_order())]
    assert engine.named("stop") == expected and engine.named("remove") == expected
    assert [s.name for s in result.stopped] == list(reversed(d.start_order()))
    assert engine.containers == {}
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"


async def test_the_off_loop_check_sees_a_call_on_the_loop(
    engine: FakeDockerEngine, sdk_threads: list[bool]
) -> None:
    """The check above is not vacuous: a blocking call made on the loop is caught."""
    docker.DockerClient(base_url=engine.base_url).ping()  # on the loop, on purpose
    assert sdk_threads and sdk_threads[-1] is True


# -- errors a person can act on ---------------------------------------------------------------

REGISTRY_UNREACHABLE = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
    "127.0.0.53:53: no such host"
)


@pytest.fixture
def no_engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Docker host URL where nothing listens: no file at all, or a socket nobody accepts on."""
    path = tmp_path / "docker.sock"
    if request.param == "refused":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))  # bound, never listening: connect() is refused
            yield f"unix://{path}"
    else:
        yield f"unix://{path}"


@pytest.mark.parametrize(
    ("no_engine", "reason"),
    [("missing", "No such file or directory"), ("refused", "Connection refused")],
    indirect=["no_engine"],
)
async def test_no_engine_is_named_with_its_setting(no_engine: str, reason: str) -> None:
    address = engine_address(no_engine)
    rt = DockerRuntime(connector(address), address=address)
    with pytest.raises(DockerEngineUnavailable) as caught:
        await rt.start(ref("db"))
    assert str(caught.value) == (
        f"no Docker engine at {no_engine} (SHOPFLOOR_PIPELINE_DOCKER_HOST): {reason}"
    )


def test_the_engine_address_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert str(engine_address(None)) == (
        "unix:///var/run/docker.sock (the default; set SHOPFLOOR_PIPELINE_DOCKER_HOST or "
        "DOCKER_HOST)"
    )
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert str(engine_address(None)) == "tcp://127.0.0.1:2375 (DOCKER_HOST)"
    assert engine_address("unix:///x.sock").source == "SHOPFLOOR_PIPELINE_DOCKER_HOST"


@pytest.mark.parametrize("no_engine", ["refused"], indirect=True)
async def test_the_logs_pipeline_without_an_engine_fails_at_once_naming_it(
    env: WorkflowEnvironment, tmp_path: Path, no_engine: str
) -> None:
    """Seed 004's trigger with no engine: one start attempt, a message naming the service,
    the address and its setting, and no rollback waiting out the same error."""
    settings = pipeline_settings(tmp_path, docker_host=no_engine)
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        handle = await env.client.start_workflow(
            "LogsPipelineWorkflow",
            "logs",
            id=f"logs-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue_prefix + "logs-queue",
        )
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        history = await handle.fetch_history()
    assert caught.value.cause.message == (
        "pipeline 'logs' failed to start, rolled back: service 'otel-collector' could not "
        "start: cannot start otel-collector: no Docker engine at "
        f"{no_engine} (SHOPFLOOR_PIPELINE_DOCKER_HOST): Connection refused"
    )
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.count("pipeline_start_service") == 1 and "pipeline_stop_service" not in (
        scheduled
    ), scheduled
    started = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert started and max(started) == 1, "an activity was retried"


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        (500, REGISTRY_UNREACHABLE, "no registry was reachable from the engine"),
        (None, "manifest for example/svc:9.9 not found: manifest unknown", "check the image's"),
    ],
)
async def test_an_image_neither_local_nor_pullable_is_named(
    engine: FakeDockerEngine, status: int | None, message: str, hint: str
) -> None:
    engine.pull_errors["example/svc:9.9"] = (status, message)
    rt = DockerRuntime(
        lambda: docker.DockerClient(base_url=engine.base_url), address=engine.base_url
    )
    with pytest.raises(ImageUnavailable) as caught:
        await rt.start(ref("db", image="example/svc:9.9"))
    assert str(caught.value).startswith(
        f"image 'example/svc:9.9' is not on the Docker engine at {engine.base_url} and pulling "
        f"it failed: {message} ({hint}"
    ), caught.value
    assert engine.containers == {} and engine.named("create") == []


async def test_a_pipeline_whose_image_cannot_be_had_fails_at_once_naming_it(
    env: WorkflowEnvironment, engine: FakeDockerEngine, tmp_path: Path
) -> None:
    engine.pull_errors["example/absent:1"] = (500, REGISTRY_UNREACHABLE)
    settings = pipeline_settings(tmp_path, docker_host=engine.base_url)
    d = definition({"name": "api", "image": "example/absent:1"})
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        handle = await start(env.client, settings, d)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    text = caught.value.cause.message
    assert "service 'api' could not start: cannot start api: image 'example/absent:1'" in text
    assert "no registry was reachable" in text
    assert engine.named("pull") == ["example/absent:1"]  # once: not retried
