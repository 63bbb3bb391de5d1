"""`shopfloor pipeline start|stop|status|list`: seed 004's triggers, through the controller.

Imported on every CLI call: keep it light (YAML and rich are imported inside the commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shopfloor.cli_common import EXIT_USAGE, controller_call, fail
from shopfloor.client import ShopfloorClient
from shopfloor.settings import get_settings

app = typer.Typer(
    help="Service pipelines: start in dependency order (health-gated), supervise, stop.",
    no_args_is_help=True,
)

Wait = Annotated[float, typer.Option(help="seconds to wait for the outcome")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


class PipelineClient(ShopfloorClient):
    def start(
        self, name: str, definition: dict[str, Any] | None, *, wait_s: float
    ) -> dict[str, Any]:
        return self._object(
            "POST",
            f"/pipelines/{name}/start",
            json={"definition": definition} if definition else None,
            params={"wait": wait_s},
            timeout=wait_s + 30,
        )

    def stop(self, name: str, *, wait_s: float) -> dict[str, Any]:
        return self._object(
            "POST", f"/pipelines/{name}/stop", params={"wait": wait_s}, timeout=wait_s + 30
        )

    def pipeline(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/pipelines/{name}")

    def pipelines(self) -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = self._call("GET", "/pipelines").json()
        return views


def _client() -> PipelineClient:
    return PipelineClient(get_settings())


def _show(view: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from shopfloor.display import console

    console.print(f"[bold]{view['name']}[/bold] ({view['job_id']}): {view['phase']}")
    if view.get("services"):
        table = Table("service", "state", "pid / container", "health", "restarts", "since")
        for s in view["services"]:
            where = str(s["pid"]) if s.get("pid") else (s.get("container_id") or "")[:12]
            health, since = escape(s["health"]), s["since"] or ""
            table.add_row(s["name"], s["state"], where, health, str(s["restarts"]), since)
        console.print(table)
    if view.get("error"):
        console.print(f"[red]{escape(view['error'])}[/red]")


def _output(view: dict[str, Any], as_json: bool, *, ok: set[str]) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
    else:
        _show(view)
    if view["phase"] not in ok:
        raise typer.Exit(1)


@app.command()
def start(
    pipeline: Annotated[str, typer.Argument(help="a definition file (YAML) or a known name")],
    wait: Wait = 300,
    as_json: AsJson = False,
) -> None:
    """Start a pipeline; returns once every service is healthy, or fails with the reason."""
    path = Path(pipeline)
    definition = None
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from shopfloor.kinds.pipeline.definition import DefinitionError, load_definition

        try:
            parsed = load_definition(path)
        except DefinitionError as err:
            fail(str(err), EXIT_USAGE)
        name, definition = parsed.name, parsed.model_dump(mode="json", exclude_defaults=True)
    else:
        name = pipeline
    with controller_call():
        view = _client().start(name, definition, wait_s=wait)
    _output(view, as_json, ok={"running", "starting"} if not wait else {"running"})


@app.command()
def stop(name: str, wait: Wait = 300, as_json: AsJson = False) -> None:
    """Stop a pipeline's services in reverse order; returns once all are stopped."""
    with controller_call():
        view = _client().stop(name, wait_s=wait)
    _output(view, as_json, ok={"stopped", "stopping"} if not wait else {"stopped"})


@app.command()
def status(name: str, as_json: AsJson = False) -> None:
    """Each service of a pipeline: state, pid or container, health, restarts, since."""
    with controller_call():
        view = _client().pipeline(name)
    _output(view, as_json, ok={"starting", "running", "stopping", "stopped"})


@app.command("list")
def list_pipelines(as_json: AsJson = False) -> None:
    """The pipelines this deployment knows, and their phase."""
    with controller_call():
        found = _client().pipelines()
    if as_json:
        print(json.dumps(found, indent=2))
        return
    from rich.table import Table

    from shopfloor.display import console

    table = Table("pipeline", "phase", "services (start order)", "task queue", "definition")
    for p in found:
        order = " → ".join(p["services"])
        table.add_row(p["name"], p["phase"], order, p["task_queue"], p["source"])
    console.print(table)
