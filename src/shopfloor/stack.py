"""`shopfloor up`: the embedded stack — dev server, controller, workers — supervised together."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from shopfloor.devserver import DevServer
from shopfloor.processes import stop_process
from shopfloor.settings import Settings

RESTART_BACKOFF_S = 2.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only `up`, which then stops things in order.
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.proc, timeout_s=timeout_s)


class Stack:
    def __init__(self, settings: Settings, *, workers: int = 1, say=print) -> None:
        self.settings = settings
        self.say = say
        self.devserver = DevServer.from_settings(settings) if settings.embedded else None
        env = dict(os.environ)
        env["SHOPFLOOR_TEMPORAL_ADDRESS"] = settings.target_address
        env["SHOPFLOOR_DATA_DIR"] = str(settings.data_dir.resolve())
        cli = [sys.executable, "-m", "shopfloor"]
        self.children = [
            Child(f"worker-{i + 1}", [*cli, "worker"], env) for i in range(workers)
        ] + [Child("controller", [*cli, "controller"], env)]
        self._stopping = False

    def start(self) -> None:
        if self.devserver is not None:
            self.say(f"starting Temporal dev server (state: {self.devserver.db_file})")
            self.devserver.start()
        for child in self.children:
            child.start()
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        url = f"{self.settings.public_controller_url}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for child in self.children:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited during start-up")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"controller not healthy at {url} after {timeout_s}s")

    def urls(self) -> dict[str, str]:
        urls = {
            "controller": self.settings.public_controller_url,
            "API docs": f"{self.settings.public_controller_url}/docs",
            "Temporal": self.settings.target_address,
        }
        if self.devserver is not None:
            urls["Temporal UI"] = f"http://127.0.0.1:{self.settings.dev_ui_port}"
        return urls

    def supervise(self) -> None:
        """Restarts a part that dies (a crashed worker is replaced) until asked to stop."""
        while not self._stopping:
            for child in self.children:
                if not child.alive() and not self._stopping:
                    code = child.proc.returncode if child.proc else None
                    self.say(f"{child.name} exited ({code}); restarting")
                    time.sleep(RESTART_BACKOFF_S)
                    child.start()
            time.sleep(0.5)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        # Controller first (no new jobs), then workers (finish or hand back tasks), then server.
        for child in reversed(self.children):
            child.stop()
        if self.devserver is not None:
            self.devserver.stop()
