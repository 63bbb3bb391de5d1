"""How the CLI shows jobs: a live progress line fed by heartbeats, and kind-agnostic results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shopfloor.client import ShopfloorClient
from shopfloor.progress import TERMINAL

console = Console()
err_console = Console(stderr=True)
_TAIL_LINES = 15


def progress_text(status: dict[str, Any]) -> Text:
    text = Text(f"{status['job_id']}  {status['status']}", style="bold")
    # What the job says about itself comes first: it is there even while no activity runs.
    reported = status.get("workflow_progress")
    if reported:
        step = f"[{reported['step']}] " if reported.get("step") else ""
        text.append(f"\n  {step}{reported['status']}", style="cyan")
        if reported.get("wake_at"):
            text.append(f"\n  wakes at {reported['wake_at']}", style="cyan")
        for key, value in (reported.get("details") or {}).items():
            text.append(f"\n  {key}: {value}", style="dim")
    for p in status.get("progress") or []:
        details = p.get("details") or {}
        text.append(f"\n  {p['activity']} (attempt {p['attempt']}, {p['state'].lower()})")
        if isinstance(details, dict):
            parts = [f"{k}={v}" for k, v in details.items() if k != "last_line" and v != ""]
            if parts:
                text.append("  " + "  ".join(parts), style="cyan")
            if details.get("last_line"):
                text.append(f"\n  > {details['last_line'][:200]}", style="dim")
        if p.get("last_failure"):
            text.append(f"\n  last failure: {p['last_failure']}", style="yellow")
    return text


def wait_with_progress(client: ShopfloorClient, job_id: str, *, poll_s: float = 1.0) -> dict:
    with Live(
        Text(f"{job_id}  submitted"), console=err_console, refresh_per_second=4, transient=True
    ) as live:
        while True:
            status = client.status(job_id)
            live.update(progress_text(status))
            if status["status"] in TERMINAL:
                break
            # Long-poll the result briefly: returns at once when the job ends.
            result = client.result(job_id, wait_s=poll_s)
            if result["status"] in TERMINAL:
                return result
    return client.result(job_id, wait_s=10)


def show_result(result: dict[str, Any]) -> None:
    style = "green" if result["status"] == "COMPLETED" else "red"
    console.print(f"[bold]{result['job_id']}[/bold]  [{style}]{result['status']}[/{style}]")
    if result.get("error"):
        console.print(f"[red]error:[/red] {result['error']}")
    body = result.get("result")
    if isinstance(body, dict):
        table = Table(show_header=False, box=None, pad_edge=False)
        for key, value in _rows(body):
            table.add_row(key, _short(value))
        console.print(table)
        for key, value in body.items():
            if _is_multiline(value):
                lines = value.rstrip("\n").splitlines()[-_TAIL_LINES:]
                console.print(f"[bold]{key}[/bold] (last {len(lines)} lines):")
                console.print(Text("\n".join(lines)), style="dim")
    links = result.get("links") or {}
    if links:
        console.print("[bold]artifacts:[/bold]")
        for url in links.values():
            console.print(f"  {url}", soft_wrap=True, highlight=False)  # never wrap a link


def show_jobs(jobs: list[dict[str, Any]]) -> None:
    table = Table("job", "kind", "status", "started", "closed")
    for job in jobs:
        table.add_row(
            job["job_id"],
            job.get("kind") or "",
            job["status"],
            str(job.get("started_at") or "")[:19],
            str(job.get("closed_at") or "")[:19],
        )
    console.print(table)


def _is_multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.strip()


def _rows(body: dict[str, Any], prefix: str = ""):
    """Flat `key  value` rows; nested dicts (metrics) as dotted keys, artifact maps left to
    the links list, multi-line tails printed separately."""
    for key, value in body.items():
        if value in (None, "", [], {}) or _is_multiline(value):
            continue
        if isinstance(value, dict):
            if all(isinstance(v, str) and v.startswith("artifact://") for v in value.values()):
                continue
            yield from _rows(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            yield f"{prefix}{key}", f"{value:.4g}"
        elif isinstance(value, str):
            yield f"{prefix}{key}", value.rstrip("\n")
        else:
            yield f"{prefix}{key}", value


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def show_schedules(schedules: list[dict[str, Any]]) -> None:
    table = Table("schedule", "kind", "cron", "zone", "state", "next run", "runs")
    for view in schedules:
        state = "paused" if view["paused"] else "active"
        if view["paused"] and view.get("note"):
            state += f" ({view['note']})"
        table.add_row(
            view["id"],
            view.get("kind") or "",
            " | ".join(view.get("cron") or []),
            view.get("timezone") or "",
            Text(state),
            str((view.get("next_runs") or [""])[0])[:19],
            str(view.get("runs_total", 0)),
        )
    console.print(table)
