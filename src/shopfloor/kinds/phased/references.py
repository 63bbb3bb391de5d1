"""`${steps.<id>.<path>}` references from one step to the results of earlier ones.

Checked when a definition is validated (unknown steps, steps that do not end before the
referring one starts — a cycle or a forward reference), resolved in the workflow right
before a step runs. Pure and deterministic: safe in workflow code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

REFERENCE = re.compile(r"\$\{steps\.([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\}")


def references_in(value: Any) -> Iterable[str]:
    """The step ids that `value` (any JSON-like structure) refers to."""
    if isinstance(value, str):
        yield from (m.group(1) for m in REFERENCE.finditer(value))
    elif isinstance(value, dict):
        for item in value.values():
            yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)


def _step_fields(step: Any) -> dict[str, Any]:
    fields: dict[str, Any] = step.model_dump(
        mode="json", exclude={"id", "type", "retry", "timeout", "steps"}
    )
    return fields


def check_references(steps: Sequence[Any]) -> None:
    """Raises ValueError naming the step and the reference that cannot work."""
    seen: set[str] = set()

    def check_ids(group: Sequence[Any]) -> None:
        for step in group:
            if step.id in seen:
                raise ValueError(f"duplicate step id {step.id!r}")
            seen.add(step.id)
            if step.type == "parallel":
                check_ids(step.steps)

    check_ids(steps)

    def check(group: Sequence[Any], done: frozenset[str]) -> frozenset[str]:
        for step in group:
            if step.type == "parallel":
                # Steps of a group start together: none may use another's result.
                for sub in step.steps:
                    check([sub], done)
                done = done | _all_ids(step.steps) | {step.id}
                continue
            for ref in references_in(_step_fields(step)):
                if ref not in seen:
                    raise ValueError(f"step {step.id!r} refers to unknown step {ref!r}")
                if ref not in done:
                    raise ValueError(
                        f"step {step.id!r} refers to {ref!r}, which does not end before "
                        f"{step.id!r} starts (a cycle or a forward reference)"
                    )
            done = done | {step.id}
        return done

    check(steps, frozenset())


def _all_ids(steps: Sequence[Any]) -> frozenset[str]:
    ids: set[str] = set()
    for step in steps:
        ids.add(step.id)
        if step.type == "parallel":
            ids |= _all_ids(step.steps)
    return frozenset(ids)


def resolve(value: Any, outcomes: dict[str, dict[str, Any]]) -> Any:
    """`value` with every reference replaced. A string that is one whole reference becomes
    the referenced value itself (a dict, a number); inside longer text, its JSON-ish text."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return _lookup(whole, outcomes)
        return REFERENCE.sub(lambda m: _text(_lookup(m, outcomes)), value)
    if isinstance(value, dict):
        return {k: resolve(v, outcomes) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, outcomes) for v in value]
    return value


def _lookup(match: re.Match[str], outcomes: dict[str, dict[str, Any]]) -> Any:
    step_id, path = match.group(1), match.group(2)
    current: Any = outcomes.get(step_id)
    for part in [p for p in path.split(".") if p]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise ValueError(f"reference {match.group(0)} does not resolve (no {part!r})")
    return current


def _text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)
