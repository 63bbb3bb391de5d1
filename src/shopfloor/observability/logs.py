"""Logs: `--log-format json` (one JSON object a line) and job ids on every line logged inside
a workflow or an activity.

The ids come from the SDK's own `extra` (workflow.logger / activity.logger put
`temporal_workflow` / `temporal_activity` on the record) or, for any other logger called
inside a job (the sandbox's, a library's), from `activity.info()` / `workflow.info()`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow

FORMATS = ("text", "json")
_FIELDS = (
    "job_id", "workflow_id", "run_id", "workflow_type", "activity", "attempt", "kind",
    # job lifecycle lines (`event`: job_started, job_ended) and the controller's access log
    "event", "outcome", "duration_s", "method", "route", "path", "status",
)  # fmt: skip
# Libraries that log each request at INFO: every pipeline health probe, every export. Their
# warnings and errors still show.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "docker", "hpack")


class JobContextFilter(logging.Filter):
    """Adds job_id (= workflow id), workflow_id, run_id and, in an activity, its name and
    attempt to each record logged inside a job. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in job_context(record).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def job_context(record: logging.LogRecord | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    extra_activity = getattr(record, "temporal_activity", None) if record else None
    extra_workflow = getattr(record, "temporal_workflow", None) if record else None
    if isinstance(extra_activity, dict):
        found = {
            "workflow_id": extra_activity.get("workflow_id"),
            "run_id": extra_activity.get("workflow_run_id"),
            "workflow_type": extra_activity.get("workflow_type"),
            "activity": extra_activity.get("activity_type"),
            "attempt": extra_activity.get("attempt"),
        }
    elif isinstance(extra_workflow, dict):
        found = {
            "workflow_id": extra_workflow.get("workflow_id"),
            "run_id": extra_workflow.get("run_id"),
            "workflow_type": extra_workflow.get("workflow_type"),
        }
    elif activity.in_activity():
        info = activity.info()
        found = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
    elif workflow.in_workflow():
        winfo = workflow.info()
        found = {
            "workflow_id": winfo.workflow_id,
            "run_id": winfo.run_id,
            "workflow_type": winfo.workflow_type,
        }
    if found.get("workflow_id"):
        found["job_id"] = found["workflow_id"]
    return {k: v for k, v in found.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the job's ids when
    logged inside a job, the current trace and span ids when tracing, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        entry.update(_trace_ids())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class TextFormatter(logging.Formatter):
    """The plain format, with the job id in brackets when logged inside a job."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job = getattr(record, "job_id", None)
        return f"{line} [job {job}]" if job else line


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Root logging for `shopfloor worker` / `shopfloor controller` (replaces any handlers)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Access and error lines of the HTTP server go through the same handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
