"""How the shared controller, dashboard, CLI and metrics treat script jobs. Light: the
controller and every CLI call import it."""

from __future__ import annotations

import base64
import json
from typing import Any

from shopfloor.registry import CliOption, PutUpload


def offload(data: dict[str, Any], put: PutUpload, limit: int) -> bool:
    """A large inline source or file goes to the store; the input names its URI instead."""
    changed = False
    source = data.get("source")
    if isinstance(source, str) and len(source.encode()) > limit // 4:
        data["source_uri"] = put("script.py", source.encode())
        data.pop("source")
        changed = True
    for f in data.get("files") or []:
        content = f.get("content") or ""
        if len(content) > limit // 4:
            raw = base64.b64decode(content) if f.get("base64") else content.encode()
            f["uri"] = put(f["path"].rsplit("/", 1)[-1], raw)
            f["content"], f["base64"] = "", False
            changed = True
    return changed


def kill_reason(result: dict[str, Any]) -> str | None:
    reason = result.get("killed_reason")
    return reason if isinstance(reason, str) else None


def _env(values: list[str], fields: dict[str, Any]) -> None:
    """`--env NAME=VALUE` (repeatable) → the input's `env`; a JSON value is read as JSON and
    then made text (`--env SEED=42` sets "42")."""
    env = {}
    for text in values:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {text!r}")
        try:
            env[name] = str(json.loads(raw))
        except ValueError:
            env[name] = raw
    fields["env"] = env


ENV_OPTION = CliOption(flag="env", help="script env NAME=VALUE", apply=_env)


def outcome(result: dict[str, Any]) -> str:
    """A script passed when it exited 0; the wall-clock limit is `timed_out`, a cancel
    `cancelled`, any other exit code or kill `failed` (docs/outcomes.md)."""
    killed = result.get("killed_reason")
    if killed == "timeout":
        return "timed_out"
    if killed == "cancelled":
        return "cancelled"
    return "passed" if result.get("exit_code") == 0 and not killed else "failed"
