"""`shopfloor schedule …` and `shopfloor kill-switch …`, through the controller.

Imported by every CLI call: keep it light (no Temporal client, no YAML until a command runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shopfloor.cli_common import EXIT_FAILED, controller_call, fail, make_client

schedule_app = typer.Typer(help="Schedules of any job kind: apply a file, pause, trigger, …")
kill_switch_app = typer.Typer(help="Stop every agent turn and schedule, on every machine.")


def _call(method: str, path: str, **kwargs: Any) -> Any:
    with controller_call():
        return make_client().call(method, path, **kwargs)


def _print(value: Any, as_json: bool) -> None:
    from shopfloor.display import show_schedules

    if as_json or not isinstance(value, list):
        print(json.dumps(value, indent=2))
    else:
        show_schedules(value)


JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON")]


def read_file(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text()
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read {path}: {err}", 2)
    except (ValueError, yaml.YAMLError) as err:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}", 2)


@schedule_app.command()
def apply(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    prune: Annotated[bool, typer.Option(help="delete applied schedules not in FILE")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create or update every schedule in FILE (YAML or JSON). Twice changes nothing."""
    outcomes = _call("PUT", "/schedules", json=read_file(file), params={"prune": prune})
    if as_json:
        print(json.dumps(outcomes, indent=2))
        return
    for outcome in outcomes:
        print(f"{outcome['action']:>10}  {outcome['id']}")


@schedule_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """Every schedule with its next run."""
    _print(_call("GET", "/schedules"), as_json)


@schedule_app.command()
def describe(schedule_id: str) -> None:
    """Spec, the next 5 run times, recent runs and their status."""
    print(json.dumps(_call("GET", f"/schedules/{schedule_id}"), indent=2))


@schedule_app.command()
def pause(schedule_id: str, note: Annotated[str, typer.Option(help="why")] = "") -> None:
    _call("POST", f"/schedules/{schedule_id}/pause", json={"note": note})
    print(f"paused {schedule_id}")


@schedule_app.command()
def unpause(schedule_id: str, note: Annotated[str, typer.Option(help="why")] = "") -> None:
    _call("POST", f"/schedules/{schedule_id}/unpause", json={"note": note})
    print(f"unpaused {schedule_id}")


@schedule_app.command()
def trigger(
    schedule_id: str,
    overlap: Annotated[
        str | None,
        typer.Option(
            help="this trigger's overlap policy (skip, buffer_one, buffer_all, cancel_other, "
            "terminate_other, allow_all); default: the schedule's own"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run it now, under the schedule's overlap policy (with `skip` and a run still going,
    nothing starts: exit code 1). Runs even while paused; agent turns still check the kill
    switch."""
    params = {"overlap": overlap} if overlap else None
    done = _call("POST", f"/schedules/{schedule_id}/trigger", params=params)
    print(json.dumps(done, indent=2) if as_json else done["message"])
    if done["status"] == "SKIPPED":
        raise typer.Exit(EXIT_FAILED)


@schedule_app.command()
def backfill(
    schedule_id: str,
    start: Annotated[str, typer.Argument(help="e.g. 2026-11-01T00:00:00Z")],
    end: Annotated[str, typer.Argument(help="e.g. 2026-11-03T00:00:00Z")],
) -> None:
    """Run every slot the schedule had between START and END."""
    _call("POST", f"/schedules/{schedule_id}/backfill", json={"start": start, "end": end})
    print(f"backfill of {schedule_id} from {start} to {end} requested")


@schedule_app.command()
def delete(schedule_id: str) -> None:
    _call("DELETE", f"/schedules/{schedule_id}")
    print(f"deleted {schedule_id}")


@kill_switch_app.command()
def on(
    reason: Annotated[str, typer.Option(help="why: shown everywhere it stops something")],
) -> None:
    """Pause every schedule and make every agent turn refuse, on every machine."""
    print(json.dumps(_call("POST", "/kill-switch/on", json={"reason": reason}), indent=2))


@kill_switch_app.command()
def off(note: Annotated[str, typer.Option(help="why it is safe again")] = "") -> None:
    """Unpause what the switch paused; turns start again."""
    print(json.dumps(_call("POST", "/kill-switch/off", json={"note": note}), indent=2))


@kill_switch_app.command()
def status() -> None:
    print(json.dumps(_call("GET", "/kill-switch"), indent=2))
