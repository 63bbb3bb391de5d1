"""What the phased dashboard page adds to its context: the definition's steps as a timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopfloor.controller.dashboard.views import JobView
    from shopfloor.settings import Settings


def context(view: JobView, settings: Settings) -> dict[str, Any]:
    return {"timeline": timeline(view)}


def timeline(view: JobView) -> list[dict[str, Any]]:
    """Each step of the definition with its state: done (and how), running, waiting, to come."""
    definition = (view.input or {}).get("definition") if isinstance(view.input, dict) else None
    outcomes = {}
    if isinstance(view.result, dict):
        outcomes = {s["id"]: s for s in view.result.get("steps", []) if isinstance(s, dict)}
    progress = view.status.workflow_progress
    current = progress.step if progress else None
    steps = [s for s in (definition or {}).get("steps", []) if isinstance(s, dict)]
    if not steps:
        steps = [{"id": sid, "type": o.get("type")} for sid, o in outcomes.items()]
    entries, seen_current = [], False
    for step in steps:
        sid = step.get("id")
        entry = {"id": sid, "type": step.get("type"), "detail": _step_detail(step)}
        if sid in outcomes:
            entry["state"] = outcomes[sid]["status"].lower()
            entry["outcome"] = outcomes[sid]
        elif sid == current and not view.terminal:
            seen_current = True
            entry["state"] = "waiting" if progress and progress.wake_at else "running"
            entry["wake_at"] = progress.wake_at if progress else None
        elif not view.terminal and current and not seen_current:
            entry["state"] = "done"
        else:
            entry["state"] = "to come" if not view.terminal else "not run"
        entries.append(entry)
    return entries


def _step_detail(step: dict[str, Any]) -> str:
    kind = step.get("type")
    if kind == "delay":
        return f"wait {step.get('duration')}"
    if kind == "http":
        return f"{step.get('method', 'GET')} {step.get('url')}"
    if kind == "agent_turn":
        return f"agent turn {step.get('job_id')}"
    if kind == "job":
        return f"child job of kind {step.get('kind')}"
    if kind == "parallel":
        return "together: " + ", ".join(str(s.get("id")) for s in step.get("steps", []))
    return ""
