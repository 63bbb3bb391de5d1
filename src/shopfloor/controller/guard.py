"""The request guards: what no route should have to think about.

`RequestGuard`: bodies over the size limit get a 413 that states the limit (before anything is
buffered past it); JSON bodies are checked once for what Python's parser accepts but JSON does
not mean — NaN, Infinity, unpaired surrogates — and refused with a 422 that says which. Uploads
stream past it: their route counts and stores bytes itself.

`BrowserGuard`: what a browser can be made to send. A path or query no route can mean (NUL,
control characters, invalid UTF-8, overlong) is a 4xx before any route sees it. A Host header
that is not one of ours is refused (DNS rebinding: another site's name resolved to this
controller, so the browser would let that site read our answers). A state-changing request
without a bearer token that another site made (its Origin, or Sec-Fetch-Site) is refused: with
no token set, or with the dashboard's cookie, the browser alone would otherwise be enough.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STREAMED_PREFIXES = ("/uploads/",)
MAX_TARGET_BYTES = 8192  # path and query, as sent (percent-encoded)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CONTROL = bytes(range(0x20)) + b"\x7f"


class BadJson(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number: send a finite number")


def check_json(body: bytes) -> None:
    """Raises BadJson for NaN/Infinity or text that is not valid Unicode."""
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except BadJson:
        raise
    except (ValueError, UnicodeDecodeError):
        return  # malformed JSON: the route's own parser answers it with a 422
    try:
        # An unpaired surrogate ("\\ud800") parses, but cannot be stored or sent on as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadJson("a string contains an unpaired UTF-16 surrogate (invalid Unicode)") from None


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send, 413, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, 413, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b""):
            try:
                check_json(body)
            except BadJson as err:
                await self._refuse(send, 422, str(err))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        mb = self.max_body_bytes / 2**20
        return (
            f"request body over the {mb:g} MiB limit (SHOPFLOOR_MAX_REQUEST_MB): upload large "
            "files with PUT /uploads/<name> and pass the artifact:// URI instead"
        )

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        await refuse(send, status, detail)


async def refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def target_problem(raw_path: bytes, query: bytes) -> tuple[int, str] | None:
    """A 4xx for a request target no route can mean, else None."""
    if len(raw_path) + len(query) > MAX_TARGET_BYTES:
        return 414, f"request target over {MAX_TARGET_BYTES} bytes"
    path = unquote_to_bytes(raw_path)
    if any(c in _CONTROL for c in path):
        return 400, "the path contains NUL or control characters"
    try:
        path.decode("utf-8")
        # Query strings are decoded by the routes' parser; NUL in them reaches the routes.
        if b"\x00" in unquote_to_bytes(query.replace(b"+", b" ")):
            return 400, "the query contains NUL"
    except UnicodeDecodeError:
        return 400, "the path is not valid UTF-8"
    return None


def host_name(host: str) -> str:
    """`example.org` of `example.org:8000`, `::1` of `[::1]:8000`, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class BrowserGuard:
    def __init__(self, app: ASGIApp, *, hosts: frozenset[str], public_url: str) -> None:
        self.app = app
        self.hosts = hosts
        self.any_host = "*" in hosts
        self.public_netloc = urlsplit(public_url).netloc.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        problem = target_problem(raw_path, scope.get("query_string", b""))
        if problem is None:
            problem = self._browser_problem(scope)
        if problem is not None:
            await refuse(send, *problem)
            return
        await self.app(scope, receive, send)

    def _browser_problem(self, scope: Scope) -> tuple[int, str] | None:
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.any_host and host_name(host) not in self.hosts:
            return 400, (
                f"this controller does not answer to host {host[:100]!r} "
                "(SHOPFLOOR_ALLOWED_HOSTS names the ones it does)"
            )
        if scope["method"] in SAFE_METHODS or b"authorization" in headers:
            return None  # a bearer token is something another site cannot make a browser send
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if site and site not in ("same-origin", "none"):
            return 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
        origin = headers.get(b"origin")
        if origin is not None:
            netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
            if not netloc or netloc not in (host.lower(), self.public_netloc):
                return 403, "cross-site request refused (Origin is not this controller)"
        return None
