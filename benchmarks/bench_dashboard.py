"""How fast the dashboard's jobs page answers with 10 000 jobs in the namespace.

Creates N script jobs cheaply — workflows started on a task queue nobody polls, so they stay
RUNNING and cost the server one row each — then times GET / (the jobs list, as a browser asks
for it) through a real controller process: the first page, a kind + status filter, the second
page (Temporal's page token) and a job-id prefix search. Prints the figures; asserts nothing.

    python benchmarks/bench_dashboard.py [--jobs 10000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import temp_dev_server  # noqa: E402

from shopfloor.processes import free_port, stop_process  # noqa: E402
from shopfloor.settings import Settings  # noqa: E402
from shopfloor.temporal import connect  # noqa: E402


async def create_jobs(address: str, n: int, prefix: str) -> float:
    client = await connect(Settings(temporal_address=address))
    gate = asyncio.Semaphore(64)
    began = time.perf_counter()

    async def one(i: int) -> None:
        async with gate:
            await client.start_workflow(
                "ScriptExecutionWorkflow",
                {"source": f"print({i})"},
                id=f"{prefix}{i:05d}",
                task_queue="bench-nobody-polls",
            )

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - began


def timed(http: httpx.Client, url: str, requests: int) -> tuple[float, float, int]:
    http.get(url, headers={"accept": "text/html"})  # warm: connection, template cache
    took = []
    for _ in range(requests):
        began = time.perf_counter()
        r = http.get(url, headers={"accept": "text/html"})
        took.append(time.perf_counter() - began)
        assert r.status_code == 200, r.text[:300]
    took.sort()
    return statistics.median(took) * 1000, took[int(len(took) * 0.95) - 1] * 1000, len(r.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with temp_dev_server() as (server, root):
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        made = asyncio.run(create_jobs(server.address, args.jobs, prefix))
        print(f"created {args.jobs} jobs in {made:.1f} s ({args.jobs / made:.0f}/s)")
        port = free_port()
        env = {
            **os.environ,
            "SHOPFLOOR_TEMPORAL_ADDRESS": server.address,
            "SHOPFLOOR_CONTROLLER_PORT": str(port),
            "SHOPFLOOR_DATA_DIR": str(root / "data"),
        }
        controller = subprocess.Popen([sys.executable, "-m", "shopfloor", "controller"], env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "controller did not start"
                    time.sleep(0.2)
                # Visibility is eventually consistent: wait until the list sees every job.
                count_url = "/jobs?kind=script&limit=1000"
                while len(http.get(count_url).json()) < min(args.jobs, 1000):
                    time.sleep(0.5)
                first = http.get("/", headers={"accept": "text/html"}).text
                token = first.split('rel="next"')[0].rsplit("page=", 1)[-1].split('"')[0]
                pages = {
                    "jobs page (/)": "/",
                    "kind + status filter": "/?kind=script&status=RUNNING",
                    "second page (page token)": f"/?page={token}",
                    "job-id prefix search": f"/?q={prefix}0999",
                }
                print(f"\nGET with {args.jobs} jobs in the namespace ({args.requests} requests)")
                print(f"{'page':28} {'median ms':>10} {'p95 ms':>8} {'bytes':>8}")
                for name, url in pages.items():
                    median, p95, size = timed(http, url, args.requests)
                    print(f"{name:28} {median:10.1f} {p95:8.1f} {size:8d}")
        finally:
            stop_process(controller)


if __name__ == "__main__":
    main()
