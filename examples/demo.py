"""`make demo`: start the embedded stack (or use a running one), run example jobs, show results.

Runs a script job, a warm build123d job, a job that hits its time limit, the reference
simulation, an agent run (mock agent), the seed's poetry-research flow through a small local
gateway (its two-hour wait shortened to seconds), and a pipeline of three services that comes
up healthy and is stopped again; then starts the monitoring pipeline (Prometheus and
Alertmanager, when installed) and prints results and links, Prometheus's targets page among
them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from shopfloor.client import ControllerError, ShopfloorClient
from shopfloor.display import console, show_result
from shopfloor.registry import kinds
from shopfloor.settings import Settings, get_settings
from shopfloor.stack import EmbeddedStack

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


def start_detached_stack() -> None:
    """`shopfloor up --detach`: the stack outlives this demo, so the links it prints keep
    working; `shopfloor down` stops it."""
    done = subprocess.run([sys.executable, "-m", "shopfloor", "up", "--detach"], check=False)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def stop_detached_stack(*_: object) -> None:
    subprocess.run([sys.executable, "-m", "shopfloor", "down"], check=False)
    raise SystemExit(130)


PROMETHEUS_TARGETS = "http://127.0.0.1:9090/targets"


def monitoring_environment() -> None:
    """With Debian's prometheus installed, the stack the demo starts serves metrics and may
    run the shipped monitoring pipeline (docs/operations.md, "Monitoring pipeline")."""
    if not shutil.which("prometheus") or not shutil.which("prometheus-alertmanager"):
        return
    os.environ.setdefault("SHOPFLOOR_WORKER_METRICS_PORT", "9464")
    os.environ.setdefault("SHOPFLOOR_CONTROLLER_METRICS_PORT", "9463")
    os.environ.setdefault("SHOPFLOOR_PIPELINE_DIRS", json.dumps([str(HERE / "pipelines")]))
    os.environ.setdefault("SHOPFLOOR_MONITORING_PIPELINE", "monitoring")


def start_monitoring(settings: Settings) -> str | None:
    """Prometheus's targets page once the monitoring pipeline runs, else None (said why)."""
    if os.environ.get("SHOPFLOOR_MONITORING_PIPELINE") != "monitoring":
        return None
    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    try:
        r = httpx.post(
            f"{settings.public_controller_url}/pipelines/monitoring/start",
            params={"wait": 60},
            headers=headers,
            timeout=90,
        )
    except httpx.HTTPError as err:
        console.print(f"monitoring pipeline not started: {err}")
        return None
    phase = r.json().get("phase") if r.status_code == 200 else r.text
    if phase != "running":
        console.print(f"monitoring pipeline not running: {phase}")
        return None
    console.print("monitoring pipeline running: Prometheus scrapes the controller and workers")
    return PROMETHEUS_TARGETS


def main() -> int:
    monitoring_environment()
    settings = get_settings()
    started_here = False
    if controller_running(settings.public_controller_url):
        console.print(f"using the stack already running at {settings.public_controller_url}")
    else:
        if not os.environ.get("SHOPFLOOR_GATEWAY_URL"):
            # A local gateway for the poetry-research flow, for the length of the demo; the
            # stack's workers inherit its address.
            sys.path.insert(0, str(HERE / "phased"))
            from gateway import Gateway

            server = Gateway().serve(0)
            address = f"127.0.0.1:{server.server_address[1]}"
            os.environ["SHOPFLOOR_GATEWAY_URL"] = f"http://{address}"
            # Workers refuse loopback for jobs' requests unless allow-listed (shopfloor.egress):
            # open exactly this gateway's port, nothing else on this machine.
            allowed = os.environ.get("SHOPFLOOR_EGRESS_ALLOW", "")
            os.environ["SHOPFLOOR_EGRESS_ALLOW"] = ",".join(filter(None, [allowed, address]))
        start_detached_stack()
        started_here = True
        # Interrupted before the end: stop what the demo started; nothing is left behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop_detached_stack)
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
        prometheus = start_monitoring(settings)
    except ControllerError as err:
        console.print(f"[red]error:[/red] {err}")
        if started_here:
            stop_detached_stack()
        return 1
    console.rule("links")
    links = EmbeddedStack(settings).urls()
    if prometheus:
        links["Prometheus"] = prometheus  # its targets page: the controller and every worker
    for name, url in links.items():
        console.print(f"[bold]{name:>12}[/bold]  {url}")
    if started_here:
        console.print(
            "the stack keeps running in the background, so these links work; "
            "`.venv/bin/shopfloor down` stops it (the demo's gateway ended with the demo)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
