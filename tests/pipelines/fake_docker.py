"""A small Docker Engine API server for tests, in memory, on 127.0.0.1 (no engine can run on
these machines). It speaks what the `docker` SDK sends for the docker runtime: ping, version,
image inspect and pull, containers create/start/inspect/list/stop/remove/logs.

Containers do not run anything: "running" is a state. Images whose tag is `healthcheck`
report Docker health `starting` for their first inspects after a start, then `healthy`.
A pull of an image in `pull_errors` fails: with an HTTP status and the engine's message, or
(status None) inside a 200 progress stream, as an engine does once it has begun answering.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API_VERSION = "1.45"
HEALTH_STARTING_INSPECTS = 2


@dataclass
class Container:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    config: dict[str, Any]
    running: bool = False
    exit_code: int = 0
    inspects_since_start: int = 0
    logs: list[str] = field(default_factory=list)


class FakeDockerEngine:
    def __init__(self) -> None:
        self.images: set[str] = set()
        self.pull_errors: dict[str, tuple[int | None, str]] = {}
        self.containers: dict[str, Container] = {}
        self.calls: list[tuple[str, int, str]] = []  # (verb, time in ns, container or image)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeDockerEngine:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests do to containers behind the runtime's back ----------------------------------

    def crash(self, name: str, exit_code: int = 137) -> None:
        with self.lock:
            c = self._find(name)
            assert c is not None, name
            c.running, c.exit_code = False, exit_code
            c.logs.append(f"{c.name}: killed")

    def named(self, verb: str) -> list[str]:
        return [what for v, _, what in self.calls if v == verb]

    # -- the engine -------------------------------------------------------------------------------

    def _find(self, ref: str) -> Container | None:
        ref = ref.lstrip("/")
        for c in self.containers.values():
            if c.id == ref or c.id.startswith(ref) and len(ref) >= 12 or c.name == ref:
                return c
        return None

    def _summary(self, c: Container) -> dict[str, Any]:
        return {
            "Id": c.id,
            "Names": [f"/{c.name}"],
            "Image": c.image,
            "Labels": c.labels,
            "State": "running" if c.running else "exited",
            "Status": "Up" if c.running else f"Exited ({c.exit_code})",
        }

    def _inspect(self, c: Container) -> dict[str, Any]:
        state: dict[str, Any] = {
            "Status": "running" if c.running else "exited",
            "Running": c.running,
            "ExitCode": 0 if c.running else c.exit_code,
        }
        if c.image.endswith(":healthcheck") and c.running:
            c.inspects_since_start += 1
            starting = c.inspects_since_start <= HEALTH_STARTING_INSPECTS
            state["Health"] = {"Status": "starting" if starting else "healthy"}
        return {
            "Id": c.id,
            "Name": f"/{c.name}",
            "Image": c.image,
            "Config": {**c.config, "Labels": c.labels, "Tty": False},
            "State": state,
        }

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        path = re.sub(r"^/v\d+\.\d+", "", path)
        with self.lock:
            if path == "/_ping":
                return 200, b"OK"
            if path == "/version":
                return 200, {"ApiVersion": API_VERSION, "Version": "fake", "Os": "linux"}
            if m := re.fullmatch(r"/images/(.+)/json", path):
                image = m.group(1) if ":" in m.group(1) else f"{m.group(1)}:latest"
                return (200, {"Id": image}) if image in self.images else (404, _no("image"))
            if path == "/images/create" and method == "POST":
                image = f"{query['fromImage']}:{query.get('tag') or 'latest'}"
                self.calls.append(("pull", time.time_ns(), image))
                if image in self.pull_errors:
                    status, message = self.pull_errors[image]
                    if status is not None:
                        return status, {"message": message}
                    stream = {"status": "Pulling"}, {"error": message}
                    return 200, b"".join(json.dumps(m).encode() + b"\n" for m in stream)
                self.images.add(image)
                return 200, b'{"status":"Pulling"}\n{"status":"Downloaded"}\n'
            if path == "/containers/create" and method == "POST":
                return self._create(query.get("name", ""), body)
            if path == "/containers/json":
                wanted = json.loads(query.get("filters", "{}")).get("label", [])
                found = [
                    self._summary(c)
                    for c in self.containers.values()
                    if (c.running or query.get("all") in ("1", "true", "True"))
                    and all(_has_label(c, w) for w in wanted)
                ]
                return 200, found
            if not (m := re.fullmatch(r"/containers/([^/]+)(/\w+)?", path)):
                return 404, _no("route")
            c = self._find(m.group(1))
            if c is None:
                return 404, _no("container")
            action = m.group(2) or ""
            if action == "/json":
                return 200, self._inspect(c)
            if action == "/logs":
                frames = b"".join(_frame(line + "\n") for line in c.logs)
                return 200, frames
            if action == "/start":
                if c.running:
                    return 304, None
                c.running, c.inspects_since_start = True, 0
                c.logs.append(f"{c.name}: started")
                self.calls.append(("start", time.time_ns(), c.name))
                return 204, None
            if action == "/stop":
                if not c.running:
                    return 304, None
                c.running, c.exit_code = False, 0
                c.logs.append(f"{c.name}: stopped")
                self.calls.append(("stop", time.time_ns(), c.name))
                return 204, None
            if method == "DELETE" and not action:
                if c.running and query.get("force") not in ("1", "true", "True"):
                    return 409, _no("stopped container (it is running)")
                del self.containers[c.id]
                self.calls.append(("remove", time.time_ns(), c.name))
                return 204, None
            return 404, _no("route")

    def _create(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        image = body["Image"] if ":" in body["Image"] else f"{body['Image']}:latest"
        if image not in self.images:
            return 404, _no(f"image {image}")
        if name and self._find(name):
            return 409, {"message": f'Conflict. The container name "/{name}" is already in use'}
        c = Container(
            id=uuid.uuid4().hex + uuid.uuid4().hex,
            name=name or uuid.uuid4().hex[:12],
            image=image,
            labels=body.get("Labels") or {},
            config={k: body.get(k) for k in ("Image", "Cmd", "Env", "ExposedPorts")},
        )
        self.containers[c.id] = c
        self.calls.append(("create", time.time_ns(), c.name))
        return 201, {"Id": c.id, "Warnings": []}


def _has_label(c: Container, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in c.labels and (not sep or c.labels[key] == value)


def _no(what: str) -> dict[str, str]:
    return {"message": f"No such {what}"}


def _frame(text: str) -> bytes:
    """Docker's multiplexed stream: [stream=1 (stdout), 0, 0, 0, size (big endian)] + data."""
    data = text.encode()
    return struct.pack(">BxxxL", 1, len(data)) + data


def _handler(engine: FakeDockerEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            status, payload = engine.handle(self.command, url.path, query, body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            if status in (204, 304) or payload is None:
                data = b""
            self.send_response(status)
            kind = "application/json" if not isinstance(payload, bytes) else "text/plain"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815

        def log_message(self, *_: object) -> None:
            pass

    return Handler
