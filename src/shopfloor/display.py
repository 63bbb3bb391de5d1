"""How the CLI shows jobs: a live progress view, kind-agnostic results, tables.

User text (script output, error messages, ids) is never interpreted as markup: everything
that comes from a job goes through `Text`, so "[/tmp/x]" prints as it is. When stdout is not
a terminal, tables become tab-separated lines that are never cut.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shopfloor.client import ShopfloorClient
from shopfloor.progress import TERMINAL

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_TAIL_LINES = 15


def _plain_output() -> bool:
    return not sys.stdout.isatty()


def _fmt(value: Any) -> str:
    """One value on one line: floats short, nested dicts as k=v (a simulation's stage)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def progress_text(status: dict[str, Any]) -> Text:
    text = Text(f"{status['job_id']}  {status['status']}", style="bold")
    if status.get("outcome") and status["outcome"] != "running":
        text.append(
            f"  {status['outcome']}", style="green" if status["outcome"] == "passed" else "red"
        )
    # What the job says about itself comes first: it is there even while no activity runs.
    reported = status.get("workflow_progress")
    if reported:
        step = f"[{reported['step']}] " if reported.get("step") else ""
        text.append(f"\n  {step}{reported['status']}", style="cyan")
        if reported.get("wake_at"):
            text.append(f"\n  wakes at {reported['wake_at']}", style="cyan")
        for key, value in (reported.get("details") or {}).items():
            text.append(f"\n  {key}: {_fmt(value)}", style="dim")
    for p in status.get("progress") or []:
        details = p.get("details") or {}
        text.append(f"\n  {p['activity']} (attempt {p['attempt']}, {p['state'].lower()})")
        if isinstance(details, dict):
            parts = [f"{k}={_fmt(v)}" for k, v in details.items() if k != "last_line" and v != ""]
            if parts:
                text.append("  " + "  ".join(parts), style="cyan")
            if details.get("last_line"):
                text.append(f"\n  > {str(details['last_line'])[:200]}", style="dim")
        if p.get("last_failure"):
            text.append(f"\n  last failure: {p['last_failure']}", style="yellow")
    return text


def wait_with_progress(
    client: ShopfloorClient, job_id: str, *, poll_s: float = 1.0
) -> dict[str, Any]:
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


def show_result(result: dict[str, Any], *, passed: bool | None = None) -> None:
    ok = result["status"] == "COMPLETED" if passed is None else passed
    header = Text(result["job_id"], style="bold")
    header.append("  ")
    header.append(result["status"], style="green" if ok else "red")
    if result.get("outcome"):
        header.append(f"  {result['outcome']}", style="green" if ok else "red")
    if passed is False and result["status"] == "COMPLETED":
        header.append("  (the job ran; its result is a failure)", style="red")
    console.print(header)
    if result.get("error"):
        console.print(Text("error: ", style="red") + Text(str(result["error"])))
    body = result.get("result")
    if isinstance(body, dict):
        table = Table(show_header=False, box=None, pad_edge=False)
        for key, value in _rows(body):
            table.add_row(Text(key), Text(_short(value)))
        console.print(table)
        for key, value in body.items():
            if _is_multiline(value):
                lines = value.rstrip("\n").splitlines()[-_TAIL_LINES:]
                console.print(Text(f"{key} (last {len(lines)} lines):", style="bold"))
                console.print(Text("\n".join(lines), style="dim"))
    links = result.get("links") or {}
    if links:
        console.print(Text("artifacts:", style="bold"))
        for url in links.values():
            console.print(Text(f"  {url}"), soft_wrap=True)  # never wrap a link


def _table(headers: list[str], rows: list[list[str]]) -> None:
    if _plain_output():
        # Piped: whole values, one line per row, tab-separated (cut, awk and grep work).
        print("\t".join(headers))
        for row in rows:
            print("\t".join(row))
        return
    table = Table(*headers)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def show_jobs(jobs: list[dict[str, Any]]) -> None:
    _table(
        ["job", "kind", "status", "outcome", "started", "closed"],
        [
            [
                job["job_id"],
                job.get("kind") or "",
                job["status"],
                job.get("outcome") or "",
                str(job.get("started_at") or "")[:19],
                str(job.get("closed_at") or "")[:19],
            ]
            for job in jobs
        ],
    )


def show_schedules(schedules: list[dict[str, Any]]) -> None:
    rows = []
    for view in schedules:
        state = "paused" if view["paused"] else "active"
        if view["paused"] and view.get("note"):
            state += f" ({view['note']})"
        rows.append(
            [
                view["id"],
                view.get("kind") or "",
                " | ".join(view.get("cron") or []),
                view.get("timezone") or "",
                state,
                str((view.get("next_runs") or [""])[0])[:19],
                str(view.get("runs_total", 0)),
            ]
        )
    _table(["schedule", "kind", "cron", "zone", "state", "next run", "runs"], rows)


def _is_multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.strip()


def _rows(body: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Flat `key  value` rows; nested dicts (metrics) as dotted keys, artifact maps left to
    the links list, multi-line tails printed separately."""
    for key, value in body.items():
        if value in (None, "", [], {}) or _is_multiline(value):
            continue
        if isinstance(value, str) and value.startswith("artifact://"):
            continue  # listed, whole, with the links below
        if isinstance(value, dict):
            if all(isinstance(v, str) and v.startswith("artifact://") for v in value.values()):
                continue
            yield from _rows(value, f"{prefix}{key}.")
        elif isinstance(value, str):
            yield f"{prefix}{key}", value.rstrip("\n")
        else:
            yield f"{prefix}{key}", _fmt(value)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
