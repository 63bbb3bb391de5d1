"""The request guard: what no route should have to think about.

Bodies over the size limit get a 413 that states the limit (before anything is buffered past
it); JSON bodies are checked once for what Python's parser accepts but JSON does not mean —
NaN, Infinity, unpaired surrogates — and refused with a 422 that says which. Uploads stream
past it: their route counts and stores bytes itself.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STREAMED_PREFIXES = ("/uploads/",)


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
