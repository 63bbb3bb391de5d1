"""`make demo`: start the embedded stack (or use a running one), run example jobs, show results.

Runs a script job, a warm build123d job, a job that hits its time limit, the reference
simulation, an agent run (mock agent), the seed's poetry-research flow through a small local
gateway (its two-hour wait shortened to seconds), and a pipeline of three services that comes
up healthy and is stopped again; then prints results and links.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from shopfloor.client import ControllerError, ShopfloorClient
from shopfloor.display import console, show_result
from shopfloor.registry import kinds
from shopfloor.settings import get_settings
from shopfloor.stack import Stack

HERE = Path(__file__).parent


def controller_running(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def example_jobs() -> list[tuple[str, str, dict]]:
    jobs = [
        ("script", "hello script", {"source": (HERE / "hello_script.py").read_text()}),
        ("script", "build123d part (warm)", {"source": (HERE / "cad_part.py").read_text()}),
        (
            "script",
            "runaway script (time limit)",
            {"source": "import time\nprint('sleeping…')\ntime.sleep(60)", "timeout_s": 2},
        ),
    ]
    jobs.append(
        (
            "agent",
            "agent run (mock agent)",
            json.loads((HERE / "agents" / "hello.json").read_text()),
        )
    )
    if os.environ.get("SHOPFLOOR_GATEWAY_URL"):
        jobs.append(("poetry-research", "poetry research (wait: 5 s)", {"wait": "5s"}))
    if "simulation" in kinds():
        sim = kinds()["simulation"]
        jobs.append(
            (
                "simulation",
                "box down a ramp",
                sim.input_from_file(HERE / "ramp_box.py", {}).model_dump(mode="json"),
            )
        )
    return jobs


def main() -> int:
    settings = get_settings()
    stack = None
    if controller_running(settings.public_controller_url):
        console.print(f"using the stack already running at {settings.public_controller_url}")
    else:
        if not os.environ.get("SHOPFLOOR_GATEWAY_URL"):
            # A local gateway for the poetry-research flow; the stack's workers inherit it.
            sys.path.insert(0, str(HERE / "phased"))
            from gateway import Gateway

            server = Gateway().serve(0)
            os.environ["SHOPFLOOR_GATEWAY_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
        stack = Stack(settings, say=console.print)
        stack.start()
    try:
        client = ShopfloorClient(settings)
        submitted = []
        for kind, title, job in example_jobs():
            job_id = client.submit(kind, job)["job_id"]
            console.print(f"submitted [bold]{title}[/bold] → {job_id}")
            submitted.append((title, job_id))
        for title, job_id in submitted:
            console.rule(title)
            show_result(client.result(job_id, wait_s=240))
        if "pipeline" in kinds():
            sys.path.insert(0, str(HERE / "pipelines"))
            from demo_pipeline import run_demo_pipeline

            run_demo_pipeline(settings)
        console.rule("links")
        urls = stack.urls() if stack else {"controller": settings.public_controller_url}
        for name, url in urls.items():
            console.print(f"[bold]{name:>12}[/bold]  {url}")
        if stack and sys.stdin.isatty():
            console.print("the stack keeps running; Ctrl-C to stop")
            try:
                stack.supervise()
            except KeyboardInterrupt:
                pass
    except ControllerError as err:
        console.print(f"[red]error:[/red] {err}")
        return 1
    finally:
        if stack:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
