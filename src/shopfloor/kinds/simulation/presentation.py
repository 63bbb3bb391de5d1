"""How the shared controller, dashboard and metrics treat simulation jobs. Light: the
controller and every CLI call import it."""

from __future__ import annotations

import base64
from typing import Any

from shopfloor.registry import PutUpload

# What the sandbox says when it kills a run: a FAIL verdict's reason starts with one of them.
KILL_REASONS = ("timeout", "memory", "cpu", "processes", "file_size", "disk", "cancelled")


def offload(data: dict[str, Any], put: PutUpload, limit: int) -> bool:
    """A large inline scene source or single part goes to the store; the scene becomes a URI."""
    scene = data.get("scene") or {}
    if scene.get("kind") == "source" and len(scene.get("source", "")) > limit // 4:
        uri = put("scene.py", scene["source"].encode())
        data["scene"] = {"kind": "uri", "uri": uri, "format": "py"}
        return True
    if scene.get("kind") == "geometry" and len(scene.get("parts", [])) == 1:
        part = scene["parts"][0]
        if len(part.get("data_base64", "")) > limit // 4:
            fmt = part["format"]
            data["scene"] = {
                "kind": "uri",
                "uri": put(f"part.{fmt}", base64.b64decode(part["data_base64"])),
                "format": fmt,
                "label": part["label"],
                "fixed": part.get("fixed", False),
            }
            return True
    return False


def kill_reason(result: dict[str, Any]) -> str | None:
    """A FAIL verdict's reason names the kill first ("timeout: …", "memory: …")."""
    text = result.get("reason")
    if result.get("outcome") != "FAIL" or not isinstance(text, str):
        return None
    head = text.split(":", 1)[0].strip()
    return head if head in KILL_REASONS else None


def outcome(result: dict[str, Any]) -> str:
    """A simulation passed with a SUCCESS verdict, or COMPLETED (a scene without objectives
    that ran to its end); a run killed at its wall-clock limit `timed_out`, a cancelled one
    `cancelled`, any other FAIL `failed` (docs/outcomes.md)."""
    if result.get("outcome") in ("SUCCESS", "COMPLETED"):
        return "passed"
    reason = result.get("reason")
    if isinstance(reason, str) and reason == "cancelled":
        return "cancelled"
    if isinstance(reason, str) and reason.startswith("timeout:"):
        return "timed_out"
    return "failed"
