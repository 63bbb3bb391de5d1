"""Input too large for a Temporal payload travels through the artifact store by reference,
from the controller (HTTP) and the CLI (through the controller); what cannot is refused at
once with the reason."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from tests.containment.stl import box_stl
from tests.helpers import Stack

STL_5MB = box_stl(92)


def _simulated_the_cube(result: dict) -> None:
    assert result["outcome"] == "COMPLETED", result["reason"]
    assert result["metrics"]["target"] == "cube" and result["metrics"]["sim_time_s"] > 0.9


def test_a_5mb_stl_inline_over_http_simulates(stack: Stack) -> None:
    assert len(STL_5MB) > 5_000_000
    part = {"label": "cube", "format": "stl", "data_base64": base64.b64encode(STL_5MB).decode()}
    job = {
        "scene": {"kind": "geometry", "parts": [part]},
        "options": {"duration_s": 1, "render": False},
    }
    res = stack.run("simulation", job, wait_s=180)
    assert res["result"]["metrics"]["target"] == "cube", res
    _simulated_the_cube(res["result"])


def test_a_5mb_stl_through_the_cli_simulates(stack: Stack, tmp_path: Path) -> None:
    stl = tmp_path / "cube.stl"
    stl.write_bytes(STL_5MB)
    env = {**stack.env, "SHOPFLOOR_CONTROLLER_URL": stack.url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopfloor",
            "submit",
            "simulation",
            str(stl),
            "--wait",
            "--json",
            "-o",
            "duration_s=1",
            "-o",
            "render=false",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"COMPLETED"' in done.stdout and '"cube"' in done.stdout, done.stdout


def test_a_large_script_and_files_travel_by_reference(stack: Stack) -> None:
    filler = "# " + "x" * 1000 + "\n"
    source = filler * 900 + "print(open('data.bin', 'rb').read().count(b'\\x07'))\n"
    data = bytes([7]) * 700_000
    job = {
        "source": source,
        "files": [{"path": "data.bin", "content": base64.b64encode(data).decode(), "base64": True}],
    }
    res = stack.run("script", job)
    assert res["result"]["exit_code"] == 0, res["result"]["stderr_tail"]
    assert res["result"]["stdout_tail"] == "700000\n"


def test_what_cannot_travel_is_refused_at_once_with_the_reason(stack: Stack) -> None:
    small = base64.b64encode(box_stl(40)).decode()  # ~1 MB each: three do not fit inline
    parts = [{"label": f"cube{i}", "format": "stl", "data_base64": small} for i in range(3)]
    r = stack.http.post("/jobs/simulation", json={"scene": {"kind": "geometry", "parts": parts}})
    assert r.status_code == 413, r.text
    assert "upload large parts" in r.text
