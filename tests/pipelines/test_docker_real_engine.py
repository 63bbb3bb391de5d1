"""The docker runtime's properties on a real Docker engine: the session's own dockerd on a
private socket (`docker_engine`, tests/dockerd.py), with images built locally from
busybox-static (no registry is reachable). The same properties as against the fake Engine API
of test_docker_runtime.py — labels, a container adopted after a crash instead of a second
one, a dead container restarted, health (a TCP check, the image's own HEALTHCHECK), gated
starts and reverse stop, no SDK call on the event loop — plus a real worker process SIGKILLed
while a pipeline's containers start, and an image that is neither local nor pullable.

Containers use the host's network (`network: host`) or none: the engine has no bridge.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, closing
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.testing import WorkflowEnvironment

from shopfloor.devserver import DevServer
from shopfloor.kinds.pipeline.docker_runtime import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_SERVICE,
    DockerRuntime,
    ImageUnavailable,
    container_name,
)
from shopfloor.kinds.pipeline.models import PipelineStatus, ServiceRef, ServiceSpec
from shopfloor.processes import free_port
from shopfloor.registry import kinds
from shopfloor.settings import Settings
from shopfloor.worker import build_workers, kind_resources
from tests.dockerd import BUSYBOX_IMAGE, PrivateDockerd
from tests.helpers import Stack, wait_until
from tests.pipelines.conftest import pipeline_settings
from tests.pipelines.support import definition, past_starting, start

HEALTH_IMAGE = "local/busybox-health:1"


@pytest.fixture
def engine(docker_engine: PrivateDockerd) -> Iterator[docker.DockerClient]:
    with closing(docker_engine.client()) as client:
        yield client


@pytest.fixture(scope="session")
def health_image(docker_engine: PrivateDockerd) -> str:
    # The image's own HEALTHCHECK (import cannot set one): healthy once /tmp/ready exists.
    return docker_engine.build(
        HEALTH_IMAGE,
        f"FROM {BUSYBOX_IMAGE}\n"
        "HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD test -e /tmp/ready\n",
    )


def runtime(docker_engine: PrivateDockerd) -> DockerRuntime:
    # The engine has no bridge: these containers use the host's network, which the operator
    # opens (SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK), as the temp dir for their volumes.
    return DockerRuntime(
        docker_engine.client,
        address=docker_engine.url,
        host_network=True,
        volume_roots=[Path(tempfile.gettempdir())],
    )


def ref(pipeline: str, name: str, token: str = "run1", **spec: Any) -> ServiceRef:
    # A shell or sleep as a container's pid 1 ignores SIGTERM: a short stop timeout, not 10 s.
    spec = {"image": BUSYBOX_IMAGE, "command": ["sleep", "3600"], "network": "none",
            "stop_timeout_s": 1, **spec}  # fmt: skip
    return ServiceRef(pipeline=pipeline, run_token=token, service=ServiceSpec(name=name, **spec))


def containers_of(client: docker.DockerClient, pipeline: str, service: str | None = None) -> list:
    wanted = [f"{LABEL_PIPELINE}={pipeline}"] + ([f"{LABEL_SERVICE}={service}"] if service else [])
    return client.containers.list(all=True, filters={"label": wanted})


def httpd(port: int, *, before: str = "") -> list[str]:
    """busybox httpd on the host's network: a TCP health check finds it on 127.0.0.1."""
    return ["sh", "-c", f"{before}exec httpd -f -p 127.0.0.1:{port}"]


async def test_labels_adoption_restart_health_and_stop(
    docker_engine: PrivateDockerd, engine: docker.DockerClient, sdk_threads: list[bool]
) -> None:
    pipeline = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    db = ref(
        pipeline, "db", command=httpd(port), network="host",
        health={"tcp": f"127.0.0.1:{port}"},
    )  # fmt: skip
    rt = runtime(docker_engine)
    # The test's own engine calls run off the loop too: the check below is about every call.
    off = asyncio.to_thread
    try:
        handle = await rt.start(db)
        real = await off(engine.containers.get, handle.container_id)
        assert real.name == container_name(db) and real.status == "running"
        assert real.labels == {LABEL_PIPELINE: pipeline, LABEL_SERVICE: "db", LABEL_RUN: "run1"}
        assert real.attrs["HostConfig"]["NetworkMode"] == "host"
        probe = await rt.probe(db)
        for _ in range(50):  # httpd binds its port a moment after the container starts
            if probe.healthy:
                break
            await asyncio.sleep(0.1)
            probe = await rt.probe(db)
        assert probe.alive and probe.healthy and probe.container_id == handle.container_id

        # A new worker (nothing in memory) retrying the start adopts the container.
        again = await runtime(docker_engine).start(db)
        assert again.adopted and again.container_id == handle.container_id
        assert [c.id for c in await off(containers_of, engine, pipeline)] == [handle.container_id]

        # It died: the probe says how; a retried start restarts that same container.
        await off(real.kill)
        dead = await rt.probe(db)
        assert not dead.alive and dead.error == "container exited (exit code 137)", dead
        restarted = await runtime(docker_engine).start(db)
        assert restarted.container_id == handle.container_id
        assert (await off(engine.containers.get, handle.container_id)).status == "running"

        # A container of an earlier run of the pipeline is replaced, not adopted.
        newer = await runtime(docker_engine).start(ref(pipeline, "db", token="run2"))
        assert newer.container_id != handle.container_id
        assert [c.id for c in await off(containers_of, engine, pipeline)] == [newer.container_id]

        assert (await rt.stop(ref(pipeline, "db", token="run2"))).was_running
        assert await off(containers_of, engine, pipeline) == []
        assert not (await rt.stop(ref(pipeline, "db", token="run2"))).was_running  # idempotent
    finally:
        for c in await off(containers_of, engine, pipeline):
            await off(c.remove, force=True)
        await rt.aclose()
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"


async def test_health_from_the_images_own_healthcheck(
    docker_engine: PrivateDockerd, engine: docker.DockerClient, health_image: str
) -> None:
    pipeline = f"t{uuid.uuid4().hex[:8]}"
    # Ready when the test says so: until then the engine's check has not passed.
    svc = ref(pipeline, "loki", image=health_image)
    rt = runtime(docker_engine)
    try:
        await rt.start(svc)
        first = await rt.probe(svc)
        assert first.alive and not first.healthy, first
        assert first.error in ("container health: starting", "container health: unhealthy")
        engine.containers.get(container_name(svc)).exec_run(["touch", "/tmp/ready"])
        for _ in range(100):
            probe = await rt.probe(svc)
            if probe.healthy:
                break
            await asyncio.sleep(0.1)
        assert probe.healthy, probe
    finally:
        await rt.stop(svc)
        await rt.aclose()
    assert containers_of(engine, pipeline) == []


async def test_a_pipeline_starts_gated_and_stops_in_reverse(
    env: WorkflowEnvironment,
    docker_engine: PrivateDockerd,
    engine: docker.DockerClient,
    tmp_path: Path,
    sdk_threads: list[bool],
) -> None:
    settings = pipeline_settings(
        tmp_path,
        docker_host=docker_engine.url,
        docker_host_network=True,
        docker_volume_roots=[tmp_path],
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    a, b = free_port(), free_port()
    d = definition(
        # `first` listens only once the test opens its gate: until then it is not healthy.
        {"name": "first", "image": BUSYBOX_IMAGE, "network": "host",
         "command": httpd(a, before="while [ ! -e /gate/open ]; do sleep 0.1; done; "),
         "volumes": {str(gate): "/gate"},
         "health": {"tcp": f"127.0.0.1:{a}", "interval_s": 0.2}, "stop_timeout_s": 1},
        {"name": "second", "image": BUSYBOX_IMAGE, "network": "host", "command": httpd(b),
         "depends_on": ["first"], "health": {"tcp": f"127.0.0.1:{b}", "interval_s": 0.2},
         "stop_timeout_s": 1},
    )  # fmt: skip
    off = asyncio.to_thread  # the test's own engine calls too: the last check is about all
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, [kinds()["pipeline"]]))
        for worker in build_workers(env.client, settings, plans):
            await stack.enter_async_context(worker)
        handle = await start(env.client, settings, d)
        await asyncio.to_thread(
            wait_until,
            lambda: [c for c in containers_of(engine, d.name, "first") if c.status == "running"],
            what="first's container to run",
        )
        await asyncio.sleep(1.5)  # several failed health checks of `first`
        st = await handle.query("status", result_type=PipelineStatus)
        assert [(s.name, s.state) for s in st.services] == [
            ("first", "starting"),
            ("second", "pending"),
        ]
        assert await off(containers_of, engine, d.name, "second") == []  # gated: not even created

        (gate / "open").touch()
        st = await past_starting(handle)
        assert st.phase == "running", st
        ids = {s.name: s.container_id for s in st.services}
        for name in ("first", "second"):
            assert [c.id for c in await off(containers_of, engine, d.name, name)] == [ids[name]]
        await handle.signal("stop")
        result = await handle.result()
    assert [s.name for s in result.stopped] == ["second", "first"]
    assert all(s.was_running for s in result.stopped)
    assert await off(containers_of, engine, d.name) == []
    assert sdk_threads and not any(sdk_threads), "a docker SDK call ran on the event loop"


async def test_worker_sigkilled_while_containers_start(
    env: WorkflowEnvironment,
    dev_server: DevServer,
    docker_engine: PrivateDockerd,
    engine: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """A real `shopfloor worker` dies while `b`'s container is up but not yet healthy; the
    retry on a new worker finds it by its labels: one container per service, b's the same."""
    host = f"dk-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={
            "SHOPFLOOR_PIPELINE_HOST": host,
            "SHOPFLOOR_PIPELINE_DOCKER_HOST": docker_engine.url,
            "SHOPFLOOR_PIPELINE_DOCKER_HOST_NETWORK": "true",
            "SHOPFLOOR_PIPELINE_DOCKER_VOLUME_ROOTS": json.dumps([str(tmp_path)]),
        },
    )
    settings = Settings(
        data_dir=tmp_path / "data", task_queue_prefix=stack.env["SHOPFLOOR_TASK_QUEUE_PREFIX"]
    )
    a, b, c = free_port(), free_port(), free_port()
    gate = tmp_path / "gate"
    gate.mkdir()

    def svc(name: str, port: int, needs: list[str], before: str = "") -> dict[str, Any]:
        return {
            "name": name, "image": BUSYBOX_IMAGE, "network": "host", "depends_on": needs,
            "command": httpd(port, before=before), "volumes": {str(gate): "/gate"},
            "health": {"tcp": f"127.0.0.1:{port}", "interval_s": 0.2, "start_timeout_s": 120},
            "stop_timeout_s": 1,
        }  # fmt: skip

    d = definition(
        svc("a", a, []),
        svc("b", b, ["a"], before="while [ ! -e /gate/open ]; do sleep 0.1; done; "),
        svc("c", c, ["b"]),
        supervise_every_s=1,
    )
    try:
        first = stack.start_worker("--kind", "pipeline")
        handle = await start(env.client, settings, d)
        running_b = await asyncio.to_thread(
            wait_until,
            lambda: [x for x in containers_of(engine, d.name, "b") if x.status == "running"],
            timeout_s=60,
            what="b's container to run",
        )
        before = running_b[0].attrs
        first.sigkill()  # b is started and not healthy: its worker dies mid-start

        stack.start_worker("--kind", "pipeline")
        (gate / "open").touch()
        st = await past_starting(handle, timeout_s=120)
        assert st.phase == "running", st
        for name in "abc":  # one container per service, from the engine itself
            assert len(containers_of(engine, d.name, name)) == 1, name
        after = engine.containers.get(before["Id"]).attrs
        # b's container was adopted, not recreated, and was never started a second time.
        assert {s.name: s.container_id for s in st.services}["b"] == before["Id"]
        assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
        assert after["RestartCount"] == 0

        await handle.signal("stop")
        result = await handle.result()
    finally:
        stack.stop()
        for x in containers_of(engine, d.name):
            x.remove(force=True)
    assert [s.name for s in result.stopped] == ["c", "b", "a"]
    assert containers_of(engine, d.name) == []


async def test_an_image_neither_local_nor_pullable_is_named(docker_engine: PrivateDockerd) -> None:
    # A registry on a loopback port where nothing listens: the pull fails as an unreachable
    # registry does (and nothing leaves this machine).
    image = f"127.0.0.1:{free_port()}/absent/svc:1.0"
    svc = ref(f"t{uuid.uuid4().hex[:8]}", "svc", image=image)
    rt = runtime(docker_engine)
    try:
        with pytest.raises(ImageUnavailable) as caught:
            await rt.start(svc)
    finally:
        await rt.aclose()
    message = str(caught.value)
    assert message.startswith(
        f"image {image!r} is not on the Docker engine at {docker_engine.url} and pulling it "
        "failed: "
    ), message
    assert "connection refused" in message and "no registry was reachable" in message


def test_a_private_dockerd_leaves_nothing_behind(docker_engine: PrivateDockerd) -> None:
    """What the session's engine is checked for at its end, shown on one of its own: after a
    container ran on the host's network (the engine mounts its network namespace), stopping
    leaves no process, mount or file."""
    other = PrivateDockerd.start()
    try:
        other.import_busybox()
        with closing(other.client()) as client:
            client.containers.run(
                BUSYBOX_IMAGE, ["sleep", "3600"], network_mode="host", detach=True
            )
        assert other.leftovers()  # the check sees a running engine: it is not vacuous
        mounts = Path("/proc/self/mountinfo").read_text()
        assert f"{other.root}/exec/netns" in mounts
    finally:
        left = other.stop()
    assert left == []
    assert str(other.root) not in Path("/proc/self/mountinfo").read_text()
    assert not other.root.exists()
