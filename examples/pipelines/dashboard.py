"""The demo's dashboard: how many records the store holds, and the last few."""

import sys

from _service import call, serve

port, store = int(sys.argv[1]), sys.argv[2]


def overview(_: object) -> tuple[int, dict]:
    records = call(f"{store}/records")["records"]
    return 200, {"records": len(records), "last": records[-5:]}


serve("dashboard", port, {"GET /": overview})
