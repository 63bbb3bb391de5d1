"""What every route depends on: settings, the Temporal client, the artifact store, auth."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
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


# What create_app put on the app's state (Starlette's State holds anything: typed here).
def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


async def _client(request: Request) -> Client:
    temporal: TemporalConnection = request.app.state.temporal
    return await temporal.get()


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
ClientDep = Annotated[Client, Depends(_client)]


# -- auth: the bearer token, or (for people in the dashboard) a signed session cookie -----------

SESSION_COOKIE = "shopfloor_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthThrottle:
    """Wrong credentials, per client address: the first `free` cost nothing; after them each
    wrong one locks the client out for a delay that doubles (1 s, 2 s, 4 s… up to `max_s`).
    While locked out, a credential is not even checked (429): guessing gets no answer. A
    right one ends the count. In memory, per controller process: a restart forgets, which
    only shortens a wait."""

    def __init__(
        self,
        *,
        free: int = 5,
        base_s: float = 1.0,
        max_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self._clients: dict[str, tuple[int, float]] = {}  # address → (failures, locked until)

    def wait_s(self, client: str) -> float:
        _, until = self._clients.get(client, (0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, client: str) -> None:
        failures = self._clients.get(client, (0, 0.0))[0] + 1
        over = failures - self.free
        delay = min(self.base_s * 2 ** (over - 1), self.max_s) if over > 0 else 0.0
        if len(self._clients) >= 10_000 and client not in self._clients:
            self._clients.pop(next(iter(self._clients)))  # bounded: the oldest goes
        self._clients[client] = (failures, self.clock() + delay)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttle(request: Request) -> AuthThrottle:
    state = request.app.state
    if not hasattr(state, "auth_throttle"):  # an app assembled without create_app (tests)
        state.auth_throttle = AuthThrottle()
    throttle: AuthThrottle = state.auth_throttle
    return throttle


def _count(request: Request, metric: str, via: str) -> None:
    metrics = getattr(request.app.state, "http_metrics", None)
    if metrics is not None:
        getattr(metrics, metric).labels(via).inc()


def throttled(request: Request, via: str) -> None:
    """429 (with Retry-After) while this client is locked out for wrong credentials."""
    wait = _throttle(request).wait_s(client_address(request))
    if wait > 0:
        _count(request, "auth_throttled", via)
        raise HTTPException(
            429,
            f"too many wrong credentials from this address: try again in {wait:.0f} s",
            {"Retry-After": str(max(1, round(wait)))},
        )


def credential_result(request: Request, via: str, ok: bool) -> None:
    if ok:
        _throttle(request).succeeded(client_address(request))
    else:
        _throttle(request).failed(client_address(request))
        _count(request, "auth_failures", via)


def _session_key(settings: Settings) -> bytes:
    """What signs session cookies: the session secret, else derived from the API token (a new
    token ends every session)."""
    secret = settings.session_secret or settings.api_token
    assert secret is not None
    return hmac.new(b"shopfloor-session-v2", secret.get_secret_value().encode(), "sha256").digest()


def _session_mac(settings: Settings, expires: str, sid: str) -> str:
    return hmac.new(
        _session_key(settings), f"session:{expires}:{sid}".encode(), "sha256"
    ).hexdigest()


def _revoked_dir(settings: Settings) -> Path:
    return settings.data_dir / "sessions-revoked"


def new_session(settings: Settings, now: float | None = None) -> str:
    """A cookie value: its expiry, a random session id and a MAC over both. It holds no token;
    logging out revokes its id (`revoke_session`)."""
    expires = str(int((now or time.time()) + settings.session_ttl_s))
    sid = secrets.token_hex(16)
    return f"{expires}.{sid}.{_session_mac(settings, expires, sid)}"


def _session_id(settings: Settings, value: str | None, now: float | None = None) -> str | None:
    """The id of a genuine, unexpired session cookie, else None."""
    if settings.api_token is None or not value:
        return None
    expires, _, rest = value.partition(".")
    sid, _, mac = rest.partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()) or len(sid) != 32:
        return None
    if not hmac.compare_digest(mac.encode(), _session_mac(settings, expires, sid).encode()):
        return None
    return sid if sid.isalnum() else None


def valid_session(settings: Settings, value: str | None, now: float | None = None) -> bool:
    sid = _session_id(settings, value, now)
    return sid is not None and not (_revoked_dir(settings) / sid).exists()


def revoke_session(settings: Settings, value: str | None) -> None:
    """Logging out ends the session on the server too: a copy of the cookie (stolen, or still
    in another tab) is refused from now on. Revoked ids are files under the data dir (shared
    by the controller replicas of one machine), kept until the session would have expired."""
    sid = _session_id(settings, value)
    if sid is None or value is None:  # (a session id comes only from a value)
        return
    revoked = _revoked_dir(settings)
    revoked.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in revoked.iterdir():  # a short list: ids of sessions that have not yet expired
        with contextlib.suppress(OSError, ValueError):
            if float(old.read_text() or 0) < now:
                old.unlink()
    (revoked / sid).write_text(value.partition(".")[0])


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


def bearer_ok(request: Request, given: str | None) -> bool | None:
    """None without a bearer token; else whether it is right (counted, throttled: 429 while
    this client is locked out). Once per request."""
    if given is None:
        return None
    cached: bool | None = getattr(request.state, "bearer_ok", None)
    if cached is not None:
        return cached
    settings: Settings = request.app.state.settings
    assert settings.api_token is not None
    throttled(request, "bearer")
    # Constant time: how long a wrong token takes must not tell how much of it was right.
    ok = hmac.compare_digest(given.encode(), settings.api_token.get_secret_value().encode())
    credential_result(request, "bearer", ok)
    request.state.bearer_ok = ok
    return ok


def given_bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    return header.removeprefix("Bearer ").strip() if header else None


def require_token(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="alternative to the header")] = None,
) -> None:
    """The bearer token (header or `?token=`), or the dashboard's session cookie."""
    if settings.api_token is None:
        return
    given = authorization.removeprefix("Bearer ").strip() if authorization else token
    if given is None and valid_session(settings, request.cookies.get(SESSION_COOKIE)):
        # A browser's cookie rides along on any request to us, even one another site makes it
        # send: changes need a request from our own pages.
        if request.method not in SAFE_METHODS and not same_origin(request, settings):
            raise HTTPException(403, "cross-site request refused (Origin/Referer is not ours)")
        return
    if not bearer_ok(request, given):
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


AUTH = [Depends(require_token)]


def signed_in(request: Request) -> bool:
    """A dashboard session, a right bearer token, or no token set (wrong ones count: they are
    throttled)."""
    settings: Settings = request.app.state.settings
    if settings.api_token is None:
        return True
    if valid_session(settings, request.cookies.get(SESSION_COOKIE)):
        return True
    return bool(bearer_ok(request, given_bearer(request)))
