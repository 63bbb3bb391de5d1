"""A small local agent gateway that logs turns: `POST /api/cron/fire {"job_id": …}`.

Run it for the poetry-research demo (and the tests use it as their gateway):

    python examples/phased/gateway.py --port 18789 --token demo-token
    SHOPFLOOR_GATEWAY_URL=http://127.0.0.1:18789 SHOPFLOOR_GATEWAY_TOKEN=demo-token \
    SHOPFLOOR_EGRESS_ALLOW=127.0.0.1:18789 shopfloor up    # workers refuse loopback unless named
    curl -s -X POST localhost:8000/jobs/poetry-research -H 'content-type: application/json' \
         -d '{"wait": "20s"}'        # then: shopfloor status <job id>

It answers each turn with a short text, and can be told to fail: `responses` maps a job id to
statuses to answer first (e.g. [503, 503] then the normal 200).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Turn:
    job_id: str
    at: float  # time.time()
    status: int


@dataclass
class Gateway:
    token: str | None = None
    responses: dict[str, list[int]] = field(default_factory=dict)
    delay_s: float = 0.0
    big_answer_for: set[str] = field(default_factory=set)
    turns: list[Turn] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, job_id: str, authorization: str | None) -> tuple[int, str]:
        if self.token is not None and authorization != f"Bearer {self.token}":
            status, text = 401, "unauthorized: bad or missing bearer token"
        else:
            with self._lock:
                planned = self.responses.get(job_id) or []
                status = planned.pop(0) if planned else 200
            text = f"turn {job_id}: " + ("ok" if status == 200 else "gateway busy")
            if status == 200 and job_id in self.big_answer_for:
                text += " " + "verse " * 10_000
        with self._lock:
            self.turns.append(Turn(job_id, time.time(), status))
        return status, text

    def calls(self, job_id: str) -> list[Turn]:
        with self._lock:
            return [t for t in self.turns if t.job_id == job_id]

    def serve(self, port: int = 0) -> ThreadingHTTPServer:
        """Starts serving on 127.0.0.1 in a thread; `server.server_address[1]` is the port."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/api/cron/fire":
                    self._reply(404, "no such route")
                    return
                length = int(self.headers.get("content-length") or 0)
                try:
                    job_id = json.loads(self.rfile.read(length))["job_id"]
                except (ValueError, KeyError, TypeError):
                    self._reply(400, 'expected {"job_id": "…"}')
                    return
                if gateway.delay_s:
                    time.sleep(gateway.delay_s)
                status, text = gateway.answer(job_id, self.headers.get("authorization"))
                headers = {"Retry-After": "1"} if status == 429 else {}
                self._reply(status, text, headers)

            def _reply(self, status: int, text: str, headers: dict | None = None) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                print(f"gateway: {self.command} {self.path} → {args[1] if len(args) > 1 else ''}")

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=18789)
    parser.add_argument("--token", default=None, help="bearer token to require")
    args = parser.parse_args()
    server = Gateway(token=args.token).serve(args.port)
    print(f"gateway listening on http://127.0.0.1:{server.server_address[1]}/api/cron/fire")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
