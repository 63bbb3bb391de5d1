"""The one builder of Temporal visibility queries for listing jobs (`GET /jobs`, `shopfloor
list`, the dashboard's jobs page). Every value from outside is quoted and escaped: a kind, a
status or an id prefix with a quote in it stays one string, never more query."""

from __future__ import annotations

from collections.abc import Sequence

# The statuses `list` filters on, as Temporal's visibility query spells them.
STATUSES = {
    "RUNNING": "Running",
    "COMPLETED": "Completed",
    "FAILED": "Failed",
    "CANCELED": "Canceled",
    "CANCELLED": "Canceled",
    "TERMINATED": "Terminated",
    "TIMED_OUT": "TimedOut",
    "CONTINUED_AS_NEW": "ContinuedAsNew",
}
MAX_PREFIX_CHARS = 200


def quoted(text: str) -> str:
    """A string literal of the visibility query language."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def execution_status(status: str) -> str | None:
    """Temporal's spelling of a status as users write it (`running`, `timed-out`…), else None."""
    return STATUSES.get(status.strip().upper().replace("-", "_"))


def jobs_query(
    workflow_types: Sequence[str],
    *,
    status: str | None = None,
    id_prefix: str | None = None,
    outcome: str | None = None,
) -> str:
    """Jobs of these workflow types; with `status` (already checked by `execution_status`)
    only those in it; with `id_prefix` only those whose id starts so; with `outcome` (checked
    by `shopfloor.outcome.outcome_name`) only those whose `ShopfloorOutcome` says so."""
    query = "WorkflowType IN (" + ", ".join(quoted(t) for t in workflow_types) + ")"
    if status:
        query += f" AND ExecutionStatus = {quoted(status)}"
    if outcome:
        query += f" AND ShopfloorOutcome = {quoted(outcome)}"
    if id_prefix:
        query += f" AND WorkflowId STARTS_WITH {quoted(id_prefix)}"
    return query
