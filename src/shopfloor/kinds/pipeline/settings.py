"""The pipeline kind's own settings (`SHOPFLOOR_PIPELINE_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPFLOOR_PIPELINE_", env_file=".env", extra="ignore"
    )

    # Directories of pipeline definitions (YAML) beside the shipped ones: a worker polls
    # `<name>-queue` for each pipeline found there, the controller starts them by name.
    # Processes and logs of the process runtime live under `run_dir` (default
    # <data_dir>/pipelines).
    dirs: list[Path] = Field(default_factory=list)
    run_dir: Path | None = None
    # The host name of this worker's queue `pipeline-host-<host>` (default: the machine's name):
    # the activities that touch a host's processes or Docker engine run there.
    host: str | None = None
    # A worker running as root starts process services each as a uid of its own
    # ("per-service"), or all as the user named here ("" as "per-service": a pool uid each).
    run_as: str = "per-service"
    # Docker Engine API address for the docker runtime (unset → DOCKER_HOST / the local socket).
    docker_host: str | None = None
    # A pipeline's containers run as the engine's root, from a definition whoever may start
    # pipelines writes: the host's network (Temporal and the controller on its loopback) and
    # host directories bound in are the operator's to open. `network: host` is refused unless
    # this is true; a volume's host side must lie under one of these directories.
    docker_host_network: bool = False
    docker_volume_roots: list[Path] = Field(default_factory=list)
    # Containing services and health-check commands (issue 19). Services run as a uid leased
    # from the sandbox pool, in a memory cgroup of this size (MB) and a pids cgroup capped at
    # this many processes; health-check commands run like scripts, with these small limits.
    service_memory_mb: int = Field(2048, ge=16)
    service_max_processes: int = Field(512, ge=1)
    check_memory_mb: int = Field(256, ge=16)
    check_max_processes: int = Field(16, ge=1)

    def runtime_dir(self, data_dir: Path) -> Path:
        """Where the process runtime keeps its services' directories and logs."""
        return (self.run_dir or data_dir / "pipelines").resolve()
