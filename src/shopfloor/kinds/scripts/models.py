"""Inputs and results of script jobs: plain JSON, so any Temporal client can start one."""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from shopfloor.artifacts import safe_relpath
from shopfloor.inputs import StrictInput

MAX_INLINE_SOURCE = 1024 * 1024  # bigger scripts travel as artifact URIs
MAX_INLINE_FILES = 1024 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Secrets belong in the worker's settings, never in workflow history.
_SECRET_LIKE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)

KilledReason = Literal["timeout", "memory", "cpu", "processes", "file_size", "disk", "cancelled"]


class InputFile(StrictInput):
    """A file placed next to the script before it runs (text, base64 bytes, or the content of
    an uploaded artifact, `uri`)."""

    path: str
    content: str = ""
    base64: bool = False
    uri: str | None = Field(None, description="artifact:// URI of the content instead")

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return safe_relpath(path, inside="the job dir")


class ScriptInput(StrictInput):
    """A script job. `timeout_s`, `memory_mb`, `max_processes` and `disk_mb` are also held to
    the deployment's ceilings (`SHOPFLOOR_MAX_JOB_*`, `Settings.over_ceiling`), checked by
    the controller and again by the worker; the bounds here are the model's own."""

    source: str | None = Field(None, max_length=MAX_INLINE_SOURCE, description="Python source")
    source_uri: str | None = Field(None, description="artifact:// URI of the script instead")
    files: list[InputFile] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, description="allow-listed names only")
    timeout_s: float = Field(60.0, gt=0, le=24 * 3600, description="wall-clock limit")
    memory_mb: int = Field(
        2048,
        ge=64,
        le=64 * 1024,
        description="address space (MB) the script may add on top of the runtime it starts "
        "from: the interpreter, plus the pre-imported libraries when it runs warm",
    )
    max_processes: int = Field(64, ge=1, le=4096)
    file_size_mb: int = Field(256, ge=1, le=64 * 1024)
    disk_mb: int | None = Field(
        None,
        ge=1,
        le=1024 * 1024,
        description="bytes (MB) the run may have in its work dir, out/ included, files "
        "counted by apparent size; default SHOPFLOOR_SANDBOX_DISK_MB, at most the "
        "deployment's ceiling SHOPFLOOR_MAX_JOB_DISK_MB",
    )
    warm: Literal["auto", "never"] = Field(
        "auto",
        description="auto: the script runs in a fork of a prepared interpreter (one that has "
        "imported build123d/mujoco when the script imports them); never: a fresh interpreter",
    )
    network: Literal["none", "host"] = Field(
        "none",
        description="none: no network at all; host: the host's network, without loopback, the "
        "Temporal frontend or the controller (refused by workers that cannot enforce that)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ScriptInput:
        if (self.source is None) == (self.source_uri is None):
            raise ValueError("give exactly one of `source` or `source_uri`")
        if sum(len(f.content) for f in self.files) > MAX_INLINE_FILES:
            raise ValueError("inline files exceed 1 MiB: upload them and pass a source_uri")
        return self

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name: {name!r}")
            if _SECRET_LIKE.search(name):
                raise ValueError(
                    f"{name!r} looks like a secret; secrets are read by workers from their "
                    "own settings and never travel in job input"
                )
        return env

    def disallowed_env(self, allowlist: list[str]) -> list[str]:
        return [n for n in self.env if not any(fnmatch.fnmatchcase(n, p) for p in allowlist)]


class ScriptResult(BaseModel):
    exit_code: int | None = Field(description="None when the script was killed by a signal")
    signal: str | None = None
    timed_out: bool = False
    killed_reason: KilledReason | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    duration_s: float = 0.0
    artifacts: dict[str, str] = Field(default_factory=dict, description="name → artifact URI")
    refused_artifacts: list[str] = Field(
        default_factory=list,
        description="files in out/ that were not stored, with why (symlinks, hard links to "
        "files outside the run, special files, bad names, a run over its disk cap)",
    )
    attempt: int = Field(
        1,
        description="which start of the script this result is from: 1, unless its worker was "
        "lost mid-run and the script was started again",
    )
    warm: bool = False
    warnings: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None
