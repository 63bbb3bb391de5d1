"""Must-show 4: two workers with their own data dirs on one Temporal server, a controller with a
third, all sharing one S3 store (moto's server): every artifact of every job opens through the
controller and through its presigned link, whichever worker made it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from shopfloor.devserver import DevServer
from shopfloor.jobstate import runs_in_history
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from tests.artifacts.conftest import s3_env
from tests.helpers import Stack

TOKEN = "shared-store-token"
RAMP_BOX = (Path(__file__).parents[2] / "examples" / "ramp_box.py").read_text()

SCRIPT = """
import hashlib, json, os, pathlib
tag = {tag!r}
out = pathlib.Path("out")
(out / "sub").mkdir(parents=True, exist_ok=True)
(out / "report.json").write_text(json.dumps({{"tag": tag}}))
(out / "sub" / "data.bin").write_bytes(hashlib.sha256(tag.encode()).digest() * 4096)
(out / "page.html").write_text("<script>alert(" + json.dumps(tag) + ")</script>")
print("made", tag)
"""


def _expected(tag: str) -> dict[str, bytes]:
    return {
        "report.json": json.dumps({"tag": tag}).encode(),
        "sub/data.bin": hashlib.sha256(tag.encode()).digest() * 4096,
        "page.html": f'<script>alert("{tag}")</script>'.encode(),
    }


async def _activity_identities(address: str, job_id: str) -> set[str]:
    client = await connect(Settings(temporal_address=address))
    history = await client.get_workflow_handle(job_id).fetch_history()
    return {worker for worker, _ in runs_in_history(history.events)}


def _jobs(stack: Stack, tag: str) -> tuple[str, str]:
    script = stack.submit("script", {"source": SCRIPT.format(tag=tag), "timeout_s": 60})
    sim = stack.submit(
        "simulation",
        {
            "scene": {"kind": "source", "source": RAMP_BOX},
            "options": {"duration_s": 1.5, "width": 160, "height": 120},
        },
    )
    return script, sim


@pytest.mark.timeout(600)
def test_two_workers_and_a_controller_share_an_s3_store(
    dev_server: DevServer, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    dirs = {name: tmp_path / name for name in ("worker-a", "worker-b", "controller")}
    stack = Stack(
        temporal_address=dev_server.address,
        tmp=tmp_path,
        extra_env={
            **s3_env(s3_endpoint, s3_bucket, "shared"),
            "SHOPFLOOR_API_TOKEN": TOKEN,
            "SHOPFLOOR_DATA_DIR": str(dirs["controller"]),
        },
    )
    stack.http.headers["Authorization"] = f"Bearer {TOKEN}"
    try:
        stack.start_controller()
        # Worker A alone runs the first jobs; then worker B alone (A stopped) the next: both
        # made artifacts, each with its own data dir, neither can see the other's disk.
        a = stack.start_worker(env={"SHOPFLOOR_DATA_DIR": str(dirs["worker-a"])})
        first = _jobs(stack, "from-a")
        results = {job: stack.result(job, wait_s=300) for job in first}
        b = stack.start_worker(env={"SHOPFLOOR_DATA_DIR": str(dirs["worker-b"])})
        a.stop()
        second = _jobs(stack, "from-b")
        results |= {job: stack.result(job, wait_s=300) for job in second}

        made_by = {
            job: asyncio.run(_activity_identities(dev_server.address, job)) for job in results
        }
        for job in first:
            assert made_by[job] == {f"{a.pid}@{_host(made_by[job])}"}, made_by
        for job in second:
            assert made_by[job] == {f"{b.pid}@{_host(made_by[job])}"}, made_by

        opened = 0
        for job, res in results.items():
            assert res["status"] == "COMPLETED", res
            result = res["result"]
            uris = result["artifacts"] if job.startswith("script") else result["artifact_urls"]
            assert uris, (job, result)
            if job.startswith("script"):
                tag = "from-a" if job in first else "from-b"
                assert result["exit_code"] == 0, result
                expected = _expected(tag)
                assert set(uris) == set(expected) and not result["refused_artifacts"]
            else:
                assert result["outcome"] == "SUCCESS", result["reason"]
                assert "video" in uris
                expected = {}
            for name, uri in uris.items():
                path = uri.removeprefix("artifact://")
                assert path.startswith(f"{job}/"), uri
                through = stack.http.get(f"/artifacts/{path}")
                assert through.status_code == 200, (uri, through.text)
                assert through.headers["x-content-type-options"] == "nosniff"
                link = res["links"][uri]
                assert link.startswith(s3_endpoint) and TOKEN not in link
                direct = httpx.get(link)  # a browser's GET: no token, no credentials
                assert direct.status_code == 200, (uri, direct.text)
                assert direct.content == through.content, uri
                if name in expected:
                    assert through.content == expected[name], uri
                opened += 1
            video_uri = uris.get("video")
            if video_uri:
                whole = httpx.get(res["links"][video_uri]).content
                assert whole[4:8] == b"ftyp" and len(whole) > 1000
                part = httpx.get(res["links"][video_uri], headers={"Range": "bytes=100-1099"})
                assert part.status_code == 206 and part.content == whole[100:1100]
                path = video_uri.removeprefix("artifact://")
                ranged = stack.http.get(f"/artifacts/{path}", headers={"Range": "bytes=0-99"})
                assert ranged.status_code == 206 and ranged.content == whole[:100]
        assert opened >= 8
        # Nothing went to any local disk: the store is the bucket.
        for d in dirs.values():
            local = d / "artifacts"
            assert not local.exists() or not any(local.rglob("*")), list(local.rglob("*"))
        # The controller's own route still asks for the token.
        no_token = httpx.get(f"{stack.url}/artifacts/{first[0]}/report.json")
        assert no_token.status_code == 401
    finally:
        stack.stop()


def _host(identities: set[str]) -> str:
    return next(iter(identities)).split("@", 1)[-1]
