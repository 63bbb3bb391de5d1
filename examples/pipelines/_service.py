"""What the demo's three services share: a JSON HTTP server with a /health route."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[Any], tuple[int, Any]]


def call(url: str, payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=2) as response:
        return json.loads(response.read())


def serve(name: str, port: int, routes: dict[str, Route]) -> None:
    """Serves `routes` ("GET /path" → handler(body) → (status, JSON)) plus GET /health."""
    routes = {"GET /health": lambda _: (200, {"service": name, "ok": True}), **routes}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            route = routes.get(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = route(body) if route else (404, {"error": "no such route"})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *_: object) -> None:
            pass

    print(f"{name} listening on 127.0.0.1:{port}", flush=True)
    sys.stdout.flush()
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
