"""What every route depends on: settings, the Temporal client, the artifact store, auth."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

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

    def __init__(
        self, settings: Settings, *, instrument: Callable[[Client], Client] | None = None
    ) -> None:
        self.settings = settings
        self._instrument = instrument  # e.g. adds the tracing interceptor
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    client = await asyncio.wait_for(connect(self.settings), RPC_TIMEOUT_S)
                    self._client = self._instrument(client) if self._instrument else client
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


# -- auth: the bearer token, or (for people in the dashboard) a signed session cookie -----------

SESSION_COOKIE = "shopfloor_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session_key(settings: Settings) -> bytes:
    """What signs session cookies: the session secret, else derived from the API token (a new
    token ends every session)."""
    secret = settings.session_secret or settings.api_token
    assert secret is not None
    return hmac.new(b"shopfloor-session-v1", secret.get_secret_value().encode(), "sha256").digest()


def new_session(settings: Settings, now: float | None = None) -> str:
    """A cookie value: its expiry and a MAC over it. It holds no token and no state."""
    expires = int((now or time.time()) + settings.session_ttl_s)
    mac = hmac.new(_session_key(settings), f"session:{expires}".encode(), "sha256").hexdigest()
    return f"{expires}.{mac}"


def valid_session(settings: Settings, value: str | None, now: float | None = None) -> bool:
    if settings.api_token is None or not value:
        return False
    expires, _, mac = value.partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    expected = hmac.new(_session_key(settings), f"session:{expires}".encode(), "sha256")
    return hmac.compare_digest(mac.encode(), expected.hexdigest().encode())


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a state-changing request comes from a page of this controller: its Origin (or,
    without one, its Referer) names the host the request was sent to, or the public URL."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    netloc = urlsplit(source).netloc.lower()
    allowed = {
        request.headers.get("host", "").lower(),
        urlsplit(settings.public_controller_url).netloc,
    }
    return bool(netloc) and netloc in allowed


def require_token(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="alternative to the header")] = None,
    request: Request = None,  # type: ignore[assignment]  # injected; None when called directly
) -> None:
    """The bearer token (header or `?token=`), or the dashboard's session cookie."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = authorization.removeprefix("Bearer ").strip() if authorization else token
    cookie = request.cookies.get(SESSION_COOKIE) if request is not None else None
    if given is None and valid_session(settings, cookie):
        # A browser's cookie rides along on any request to us, even one another site makes it
        # send: changes need a request from our own pages.
        if request.method not in SAFE_METHODS and not same_origin(request, settings):
            raise HTTPException(403, "cross-site request refused (Origin/Referer is not ours)")
        return
    # Constant time: how long a wrong token takes must not tell how much of it was right.
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


AUTH = [Depends(require_token)]
