"""Session fixtures: one real Temporal dev server (SQLite, as `shopfloor up` runs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.devserver import DevServer
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
