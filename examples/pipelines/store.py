"""The demo's store: keeps log records in memory."""

import sys

from _service import serve

records: list[dict] = []


def add(body: dict) -> tuple[int, dict]:
    records.append(body)
    return 201, {"stored": len(records)}


serve(
    "store",
    int(sys.argv[1]),
    {"POST /records": add, "GET /records": lambda _: (200, {"records": records[-100:]})},
)
