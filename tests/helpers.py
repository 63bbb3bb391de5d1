"""Real processes for tests: the controller and workers as subprocesses, free ports, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from shopfloor.processes import free_port, kill_process, stop_process

__all__ = ["REPO", "Proc", "Stack", "free_port", "run_cli", "wait_until"]

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], *, timeout_s: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


class Proc:
    """A shopfloor CLI subprocess (`worker`, `controller`) with its own log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, *, cwd: Path | None = None
    ) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "shopfloor", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def sigkill(self) -> None:
        """As a crash: no shutdown code runs."""
        kill_process(self.popen)

    def stop(self) -> None:
        stop_process(self.popen)


class Stack:
    """Workers and a controller against one Temporal server, isolated by a task-queue prefix."""

    def __init__(
        self,
        *,
        temporal_address: str,
        tmp: Path,
        queue_prefix: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SHOPFLOOR_TEMPORAL_ADDRESS": temporal_address,
            "SHOPFLOOR_DATA_DIR": str(tmp / "data"),
            "SHOPFLOOR_CONTROLLER_PORT": str(self.port),
            "SHOPFLOOR_TASK_QUEUE_PREFIX": f"tq-{uuid.uuid4().hex[:8]}-"
            if queue_prefix is None
            else queue_prefix,
            **(extra_env or {}),
        }
        self.workers: list[Proc] = []
        self.controller: Proc | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def start_worker(
        self, *extra: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        """A worker process; `env` adds to (or overrides) the stack's environment for this
        worker only (e.g. its own SHOPFLOOR_DATA_DIR); `cwd`: where it runs (its `.env`)."""
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = Proc(["worker", *extra], {**self.env, **(env or {})}, log, cwd=cwd).start()
        self.workers.append(worker)
        wait_until(
            lambda: "worker ready" in log.read_text(errors="replace") or not worker.alive(),
            timeout_s=60,
            what="worker ready",
        )
        assert worker.alive(), log.read_text()
        return worker

    def start_controller(self) -> Proc:
        self.controller = Proc(["controller"], self.env, self.tmp / "controller.log").start()
        wait_until(self._controller_up, timeout_s=30, what="controller /healthz")
        return self.controller

    def _controller_up(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
        for w in self.workers:
            w.stop()
        self.http.close()

    # -- HTTP conveniences -------------------------------------------------------------------
    def submit(self, kind: str, job: dict, *, key: str | None = None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        r = self.http.post(f"/jobs/{kind}", json=job, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()["job_id"]

    def result(self, job_id: str, *, wait_s: float = 120) -> dict:
        deadline = time.monotonic() + wait_s
        while True:
            r = self.http.get(f"/jobs/{job_id}/result", params={"wait": 20})
            assert r.status_code in (200, 202), r.text
            if r.status_code == 200:
                return r.json()
            assert time.monotonic() < deadline, f"job {job_id} did not finish in {wait_s}s"

    def run(self, kind: str, job: dict, *, wait_s: float = 120) -> dict:
        return self.result(self.submit(kind, job), wait_s=wait_s)

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """`shopfloor ARGS` against this stack's controller, output piped (as scripts see it)."""
        return run_cli(
            *args, env={**self.env, "SHOPFLOOR_CONTROLLER_URL": self.url}, timeout_s=timeout_s
        )


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopfloor", *args],
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )
