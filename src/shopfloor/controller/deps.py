"""What every route depends on: settings, the Temporal client, the artifact store, auth."""

from __future__ import annotations

import asyncio
import hmac
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from temporalio.client import Client

from shopfloor.artifacts import ArtifactStore
from shopfloor.controller.errors import TemporalUnavailable
from shopfloor.settings import Settings
from shopfloor.temporal import connect

RPC_TIMEOUT_S = 10.0
RPC_TIMEOUT = timedelta(seconds=RPC_TIMEOUT_S)


class TemporalConnection:
    """Connects on first use and again after a failure: the controller starts and keeps
    answering (503) while Temporal is down, and recovers without a restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect(self.settings), RPC_TIMEOUT_S)
                except (RuntimeError, OSError, TimeoutError) as err:
                    raise TemporalUnavailable(str(err) or type(err).__name__) from err
            return self._client


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


async def _client(request: Request) -> Client:
    return await request.app.state.temporal.get()


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
ClientDep = Annotated[Client, Depends(_client)]


def require_token(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="alternative to the header")] = None,
) -> None:
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = authorization.removeprefix("Bearer ").strip() if authorization else token
    # Constant time: how long a wrong token takes must not tell how much of it was right.
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


AUTH = [Depends(require_token)]
