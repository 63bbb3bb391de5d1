"""A service for pipeline tests: an HTTP server whose /health turns 200 after a delay (or
never), saying in its log when it started, became healthy and was asked to stop.

Run as `nobody` by a root worker: stdlib only, and it writes nothing but its stdout.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def say(*words: object) -> None:
    print(*words, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--healthy-after", type=float, default=0.0)
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--escapee", action="store_true", help="fork a child in its own session")
    args = parser.parse_args()
    started = time.time()
    say("started", repr(started), "pid", os.getpid(), "uid", os.getuid())
    if args.escapee:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True
        )
        say("escapee", child.pid)
    healthy_since: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ready = not args.never_healthy and time.time() - started >= args.healthy_after
            if ready and not healthy_since:
                healthy_since.append(time.time())
                say("healthy", repr(healthy_since[0]))
            if not ready:
                say(f"{args.name}: not ready yet")
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(args.name.encode())

        def log_message(self, *_: object) -> None:
            pass

    def on_term(*_: object) -> None:
        say("stopping", repr(time.time()))
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
