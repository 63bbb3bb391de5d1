"""`shopfloor up`: the embedded stack — dev server, controller, workers — supervised together.

Before starting, every port it needs is checked and a taken one is named with the process
holding it. Every part dies with `up` (a parent-death signal), however `up` ends. A part that
exits is restarted — the dev server on the same SQLite file — unless it keeps exiting, in
which case everything is stopped with a message saying which part and where its log is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shopfloor.devserver import DevServer, DevServerError
from shopfloor.ports import HTTP_API_OFFSET, METRICS_OFFSET
from shopfloor.processes import die_with_parent, listener_of, stop_process
from shopfloor.settings import Settings

RESTART_BACKOFF_S = 2.0
# A part that exits this often within the window is broken, not unlucky: stop, and say so.
MAX_EXITS, EXIT_WINDOW_S = 5, 60.0


class StackError(RuntimeError):
    """The stack cannot start or cannot keep running; the message says why."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    exits: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_EXITS))

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only `up`, which then stops things in order.
        self.proc = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent()
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.proc, timeout_s=timeout_s)

    def exited_too_often(self) -> bool:
        self.exits.append(time.monotonic())
        return len(self.exits) == MAX_EXITS and self.exits[-1] - self.exits[0] < EXIT_WINDOW_S


class EmbeddedStack:
    """`shopfloor up`'s stack in one machine (not the tests' `tests.helpers.Stack`, which
    starts workers and a controller against a test's Temporal server)."""

    def __init__(
        self, settings: Settings, *, workers: int = 1, say: Callable[[str], object] = print
    ) -> None:
        self.settings = settings
        self.say = say
        self.devserver = DevServer.from_settings(settings) if settings.embedded else None
        self._devserver_exits: deque[float] = deque(maxlen=MAX_EXITS)
        env = dict(os.environ)
        env["SHOPFLOOR_TEMPORAL_ADDRESS"] = settings.target_address
        env["SHOPFLOOR_DATA_DIR"] = str(settings.data_dir.resolve())
        cli = [sys.executable, "-m", "shopfloor"]
        self.children = [
            Child(f"worker-{i + 1}", [*cli, "worker"], self._worker_env(env, i, workers))
            for i in range(workers)
        ] + [Child("controller", [*cli, "controller"], env)]
        self._stopping = False

    def _worker_env(self, env: dict[str, str], index: int, workers: int) -> dict[str, str]:
        """Each worker its own metrics port (base, base + 1, …): one port, one process. Every
        worker's jobs are kept off all of them (the egress policy knows only its own)."""
        base = self.settings.worker_metrics_port
        if not base:
            return env
        others = [*self.settings.egress_deny_ports, *range(base, base + workers)]
        return {
            **env,
            "SHOPFLOOR_WORKER_METRICS_PORT": str(base + index),
            "SHOPFLOOR_EGRESS_DENY_PORTS": ",".join(map(str, others)),
        }

    def ports(self) -> dict[str, int]:
        ports = {"controller (SHOPFLOOR_CONTROLLER_PORT)": self.settings.controller_port}
        if self.devserver is not None:
            ports["Temporal dev server (SHOPFLOOR_DEV_SERVER_PORT)"] = self.devserver.port
            ports["Temporal UI (SHOPFLOOR_DEV_UI_PORT)"] = self.devserver.ui_port
            port = self.devserver.port
            ports["Temporal HTTP API (SHOPFLOOR_DEV_SERVER_PORT + 10)"] = port + HTTP_API_OFFSET
            ports["Temporal metrics (SHOPFLOOR_DEV_SERVER_PORT + 11)"] = port + METRICS_OFFSET
        return ports

    def check_ports(self) -> None:
        """Every port free, or a StackError naming each taken one and who holds it."""
        taken = [
            f"port {port} for the {what} is in use by {holder}"
            for what, port in self.ports().items()
            if (holder := listener_of(port))
        ]
        if taken:
            raise StackError(
                "; ".join(taken) + ". Stop that process (`shopfloor down` if it is another "
                "stack), or choose other ports with the settings named."
            )

    def start(self) -> None:
        self.check_ports()
        if self.devserver is not None:
            self.say(f"starting Temporal dev server (state: {self.devserver.db_file})")
            self._start_devserver()
        for child in self.children:
            child.start()
        self.wait_healthy()

    def _start_devserver(self) -> None:
        assert self.devserver is not None
        try:
            self.devserver.start(preexec_fn=die_with_parent())
        except DevServerError as err:
            raise StackError(f"{err} (log: {self.devserver.data_dir / 'temporal.log'})") from err

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        url = f"{self.settings.public_controller_url}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for child in self.children:
                if not child.alive():
                    raise StackError(f"{child.name} exited during start-up (see its output)")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise StackError(f"controller not healthy at {url} after {timeout_s}s")

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
        """Restarts a part that exits until asked to stop; raises StackError when one keeps
        exiting (then the caller stops everything)."""
        while not self._stopping:
            self._keep_devserver()
            for child in self.children:
                if not child.alive() and not self._stopping:
                    code = child.proc.returncode if child.proc else None
                    if child.exited_too_often():
                        raise StackError(
                            f"{child.name} exited {MAX_EXITS} times within {EXIT_WINDOW_S:g}s "
                            f"(last exit code {code}): stopping the stack; see its output above"
                        )
                    self.say(f"{child.name} exited ({code}); restarting")
                    time.sleep(RESTART_BACKOFF_S)
                    child.start()
            time.sleep(0.5)

    def _keep_devserver(self) -> None:
        server = self.devserver
        if server is None or self._stopping or (server.proc and server.proc.poll() is None):
            return
        code = server.proc.returncode if server.proc else None
        self._devserver_exits.append(time.monotonic())
        exits = self._devserver_exits
        if len(exits) == MAX_EXITS and exits[-1] - exits[0] < EXIT_WINDOW_S:
            raise StackError(
                f"the Temporal dev server keeps exiting (last code {code}); "
                f"see {server.data_dir / 'temporal.log'}"
            )
        self.say(f"Temporal dev server exited ({code}); restarting it on {server.db_file}")
        time.sleep(RESTART_BACKOFF_S)
        self._start_devserver()

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        # Controller first (no new jobs), then workers (finish or hand back tasks), then server.
        for child in reversed(self.children):
            child.stop()
        if self.devserver is not None:
            self.devserver.stop()


def pid_file(settings: Settings) -> Path:
    """Where a running `shopfloor up` for this data dir records itself (for `down`)."""
    return settings.data_dir.resolve() / "up.pid"
