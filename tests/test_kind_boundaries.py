"""Shared code names no kind: what is a kind's own lives in its folder, behind its facets
(registry.JobKind: the contract, `WorkerBundle`, `Presentation`). The one place allowed to
name the built-in kinds is the registry's list of their modules."""

from __future__ import annotations

import re
import subprocess

from tests.helpers import REPO

# The built-in kinds' names as string literals, and the two input models shared code used
# to switch on: the issue's own command, binary files included (htmx ships gzip-compressed).
PATTERN = (
    r'"(script|simulation|agent|phased|pipeline)"|ScriptInput|SimulationRequest|kinds\.simulation'
)


def _hits() -> list[str]:
    out = subprocess.run(
        ["git", "grep", "-nE", PATTERN, "--", "src/shopfloor", ":!src/shopfloor/kinds"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode in (0, 1), out.stderr  # 1: nothing found
    return out.stdout.splitlines()


def test_shared_code_names_no_kind_but_the_registry_list() -> None:
    registry = (REPO / "src/shopfloor/registry.py").read_text()
    listed = re.search(r"_KIND_MODULES = \((.*?)\n\)", registry, re.S)
    assert listed is not None
    kind_list = {line.strip() for line in listed.group(1).splitlines()}
    outside = [
        hit
        for hit in _hits()
        if not (
            hit.startswith("src/shopfloor/registry.py:")
            and hit.split(":", 2)[2].strip() in kind_list
        )
    ]
    assert outside == [], "kind-specific code outside its kind:\n" + "\n".join(outside)
