"""What the worker asks a zygote to start: one typed request, serialised and parsed here only.

Light on purpose: the zygote process imports it before the heavy modules it pre-imports.
On the wire it is one JSON object tagged by `mode` ("exec" | "pyfile" | "call").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shopfloor.sandbox._limits import Limits, RunIdentity


@dataclass(frozen=True)
class Exec:
    """A fresh program: the zygote forks and execs `argv` (cold)."""

    argv: list[str]
    # The program applies the memory limit itself once its runtime is loaded
    # (`limit_address_space`); else RLIMIT_AS is set from the exec (see `python`).
    sets_own_memory_limit: bool = False
    # A fresh Python interpreter: RLIMIT_AS = a fresh interpreter's size (measured once by
    # the zygote) + memory_mb; else memory_mb as a whole.
    python: bool = False
    mode: str = field(default="exec", init=False)


@dataclass(frozen=True)
class Script:
    """A Python script run as `__main__` in a fork of the zygote (warm)."""

    path: str
    args: list[str]
    mode: str = field(default="pyfile", init=False)


@dataclass(frozen=True)
class Call:
    """`module:function(arg)` in a fork of the zygote (warm); its return value is the exit code."""

    target: str
    arg: Any = None
    mode: str = field(default="call", init=False)


Program = Exec | Script | Call
_PROGRAMS: dict[str, type[Exec] | type[Script] | type[Call]] = {
    "exec": Exec,
    "pyfile": Script,
    "call": Call,
}


@dataclass(frozen=True)
class LaunchRequest:
    id: str
    program: Program
    cwd: str
    env: dict[str, str]
    limits: Limits
    cgroup_procs: list[str] = field(default_factory=list)
    identity: RunIdentity | None = None

    @property
    def warm(self) -> bool:
        """Runs in the fork itself (the zygote's imports already done), not in an exec."""
        return not isinstance(self.program, Exec)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LaunchRequest:
        raw = json.loads(data)
        program = dict(raw.pop("program"))
        kind = _PROGRAMS[program.pop("mode")]
        identity = raw.pop("identity", None)
        return cls(
            program=kind(**program),
            limits=Limits(**raw.pop("limits")),
            identity=RunIdentity(**identity) if identity is not None else None,
            **raw,
        )
