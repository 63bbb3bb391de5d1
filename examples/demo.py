"""`make demo`: start the embedded stack (or use a running one), run example jobs, show results.

Runs a script job, a warm build123d job, a job that hits its time limit, and — when the
simulation kind is installed — the reference simulation, then prints results and links.
"""

from __future__ import annotations

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
