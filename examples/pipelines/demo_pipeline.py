"""The pipeline part of `make demo`: start demo.yaml, show it healthy (and working), stop it.

Call `run_demo_pipeline(settings)` with a controller running (examples/demo.py does), or run
this file on its own against a running stack (`shopfloor up`).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from rich.markup import escape

from shopfloor.client import ControllerError
from shopfloor.display import console
from shopfloor.kinds.pipeline.cli import PipelineClient
from shopfloor.kinds.pipeline.definition import load_definition
from shopfloor.settings import Settings, get_settings

DEMO = Path(__file__).with_name("demo.yaml")


def _table(view: dict) -> None:
    for s in view["services"]:
        console.print(
            f"  {s['name']:<10} {s['state']:<9} pid {s['pid'] or '-':<8} health {s['health']}"
        )


def run_demo_pipeline(settings: Settings) -> bool:
    """True when the pipeline came up healthy, answered, and stopped."""
    definition = load_definition(DEMO)
    client = PipelineClient(settings)
    console.rule("pipeline demo: collector → store ← dashboard")
    try:
        view = client.start(
            definition.name, definition.model_dump(mode="json", exclude_defaults=True), wait_s=120
        )
        console.print(f"{view['job_id']}: {view['phase']}")
        _table(view)
        if view["phase"] != "running":
            console.print(escape(str(view.get("error"))), style="red")
            return False
        # The services work together: a line through the collector shows on the dashboard.
        line = json.dumps({"line": "hello from make demo"}).encode()
        urllib.request.urlopen("http://127.0.0.1:18702/ingest", data=line, timeout=5).read()
        board = urllib.request.urlopen("http://127.0.0.1:18703/", timeout=5).read().decode()
        console.print(f"dashboard: {board}")
        view = client.stop(definition.name, wait_s=60)
        console.print(f"{view['job_id']}: {view['phase']}")
        _table(view)
        return view["phase"] == "stopped"
    except ControllerError as err:
        console.print(f"error: {escape(str(err))}", style="red")
        return False


if __name__ == "__main__":
    sys.exit(0 if run_demo_pipeline(get_settings()) else 1)
