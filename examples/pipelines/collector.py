"""The demo's collector: takes log lines and forwards them to the store."""

import sys

from _service import call, serve

port, store = int(sys.argv[1]), sys.argv[2]


def ingest(body: dict) -> tuple[int, dict]:
    return 202, call(f"{store}/records", {"line": str((body or {}).get("line", ""))})


serve("collector", port, {"POST /ingest": ingest})
