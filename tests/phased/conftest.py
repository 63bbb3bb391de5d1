"""A real local gateway (examples/phased/gateway.py) on 127.0.0.1, and in-process workers
built the way `shopfloor worker` builds them."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from shopfloor.outcome import can_record_outcomes
from shopfloor.registry import JobKind
from shopfloor.settings import Settings
from shopfloor.worker import build_workers, kind_resources

EXAMPLES = Path(__file__).parents[2] / "examples" / "phased"
TOKEN = "gateway-test-token"


def _gateway_module() -> Any:
    spec = importlib.util.spec_from_file_location("phased_gateway", EXAMPLES / "gateway.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["phased_gateway"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


Gateway = _gateway_module().Gateway


@contextmanager
def serving_gateway() -> Iterator[Any]:
    """The example gateway on a free port, requiring TOKEN; `.url` is its address."""
    gw = Gateway(token=TOKEN)
    server = gw.serve(0)
    gw.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield gw
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway() -> Iterator[Any]:
    with serving_gateway() as gw:
        yield gw


@asynccontextmanager
async def running(client: Client, settings: Settings, kinds: list[JobKind]) -> AsyncIterator[None]:
    """In-process workers for `kinds`, with their lifespans, as `shopfloor worker` runs them."""
    async with AsyncExitStack() as stack:
        plans = await stack.enter_async_context(kind_resources(settings, kinds))
        # The time-skipping test server cannot hold the outcome's search attributes: its
        # workers run without recording outcomes (docs/outcomes.md).
        outcomes = await can_record_outcomes(client)
        for worker in build_workers(client, settings, plans, record_outcomes=outcomes):
            await stack.enter_async_context(worker)
        yield
