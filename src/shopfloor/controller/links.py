"""Links: every `artifact://` URI in a result becomes a URL the controller serves it at."""

from __future__ import annotations

from typing import Any

from shopfloor.artifacts import SCHEME


def artifact_url(base_url: str, uri: str) -> str:
    return f"{base_url}/artifacts/{uri[len(SCHEME) :]}"


def links_in(value: Any, base_url: str) -> dict[str, str]:
    """artifact:// URI → HTTP URL, for every URI anywhere in `value` (nested dicts, lists)."""
    found: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, str) and v.startswith(SCHEME):
            found[v] = artifact_url(base_url, v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


def job_links(base_url: str, job_id: str) -> dict[str, str]:
    return {
        "status_url": f"{base_url}/jobs/{job_id}",
        "result_url": f"{base_url}/jobs/{job_id}/result",
    }
