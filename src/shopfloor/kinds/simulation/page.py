"""What the simulation's dashboard page adds to its context: the metrics as rows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopfloor.controller.dashboard.views import JobView
    from shopfloor.settings import Settings


def context(view: JobView, settings: Settings) -> dict[str, Any]:
    result = view.result if isinstance(view.result, dict) else {}
    return {"metrics_rows": flat_metrics(result.get("metrics"))}


def flat_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts become dotted names."""
    rows: list[tuple[str, str]] = []
    if not isinstance(metrics, dict):
        return rows
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flat_metrics(value, f"{name}.")
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, list):
            rows.append((name, json.dumps(value)))
        else:
            rows.append((name, str(value)))
    return rows
