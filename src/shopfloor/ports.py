"""Ports the embedded Temporal dev server takes beside its frontend port.

Temporal's HTTP API listens on the frontend port + 10 unless told otherwise; the embedded dev
server is started that way, with its metrics on + 11 (shopfloor.egress keeps jobs off both,
the stack lists them). Constants only: the dev server and the egress policy both name them
without importing each other.
"""

HTTP_API_OFFSET = 10
METRICS_OFFSET = 11
