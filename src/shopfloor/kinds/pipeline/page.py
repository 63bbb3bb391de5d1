"""What the pipeline's dashboard page adds to its context: the tails of its services' logs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopfloor.kinds.pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from shopfloor.controller.dashboard.views import JobView
    from shopfloor.settings import Settings

LOG_TAIL_BYTES = 4096


def context(view: JobView, settings: Settings) -> dict[str, Any]:
    return {"log_tails": log_tails(settings, view)}


def log_tails(settings: Settings, view: JobView) -> dict[str, str]:
    """The last lines of each process service's log, when this controller can see the
    worker's pipeline directory (one machine, or a shared data dir); {} otherwise."""
    status = view.live.get("status") or view.result
    if not isinstance(status, dict):
        return {}
    name = status.get("name")
    root = settings.of(PipelineSettings).runtime_dir(settings.data_dir)
    tails = {}
    for service in status.get("services", []):
        if not isinstance(service, dict) or service.get("runtime") != "process" or not name:
            continue
        tail = _tail(root / str(name) / f"{service.get('name')}.log")
        if tail is not None:
            tails[str(service.get("name"))] = tail
    return tails


def _tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return None
    text = data.decode(errors="replace")
    return text.split("\n", 1)[1] if size > LOG_TAIL_BYTES and "\n" in text else text
