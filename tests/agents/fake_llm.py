"""A local HTTP server speaking the Anthropic Messages API (and a gateway endpoint), on
127.0.0.1: the real `anthropic` client talks to it over real sockets.

The scenario is chosen by the request's system prompt (`agentConfig.system`):
  ok                   a normal reply (`end_turn`, usage)
  429-once:<id>        429 with `retry-after: <s>` the first time, then OK
  500-once:<id>        500 the first time, then OK
  too-long             400 invalid_request_error "prompt is too long: …"
Every request is recorded (path, headers, body) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLLM:
    def __init__(self, *, retry_after: str = "1") -> None:
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.seen: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if self.path.endswith("/v1/messages"):
                    self._messages(body)
                else:
                    self._gateway(body)

            def _messages(self, body: dict[str, Any]) -> None:
                scenario = str(body.get("system", "ok"))
                fake.seen[scenario] += 1
                first = fake.seen[scenario] == 1
                if scenario.startswith("429-once") and first:
                    return self._error(
                        429, "rate_limit_error", "slow down", {"retry-after": fake.retry_after}
                    )
                if scenario.startswith("500-once") and first:
                    return self._error(500, "api_error", "internal error")
                if scenario == "too-long":
                    return self._error(
                        400,
                        "invalid_request_error",
                        "prompt is too long: 250000 tokens > 200000 maximum",
                    )
                prompt = body["messages"][0]["content"]
                self._json(
                    200,
                    {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": f"Hello from {body['model']}!"}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 7},
                    },
                )

            def _gateway(self, body: dict[str, Any]) -> None:
                fake.seen["gateway"] += 1
                if fake.seen["gateway"] == 1:
                    return self._json(429, {"error": "busy"}, {"retry-after": "1"})
                self._json(
                    200,
                    {
                        "output": f"gateway did {body['workKind']}",
                        "usage": {"inputTokens": 3, "outputTokens": 4},
                    },
                )

            def _error(
                self, code: int, kind: str, message: str, headers: dict[str, str] | None = None
            ) -> None:
                self._json(
                    code, {"type": "error", "error": {"type": kind, "message": message}}, headers
                )

            def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        return Handler
