"""Specs: what to do next, decided from the state alone (pure and deterministic, like the
Engine, so workflows run them directly).

`HelloSpec` is the seed's: ask for a greeting, annotate it, finalize; retry a failed greeting
while attempt < 3. `MultiStepSpec` plans, works through the plan one step at a time (each step
sees the previous one's output), and has the work reviewed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from shopfloor.kinds.agents.models import (
    Annotate,
    Decision,
    EngineState,
    Finalize,
    GoalStatus,
    RequestWork,
    Step,
    StepStatus,
)

MAX_ATTEMPTS = 3
_PREVIEW_CHARS = 500  # what one step passes on to the next: the history stays small


class SpecError(ValueError):
    """An unknown spec type or a spec config that cannot work: a retry cannot fix it."""


class Spec(Protocol):
    def decide(self, state: EngineState) -> list[Decision]: ...


def _last(state: EngineState, work_kind: str) -> Step | None:
    found = [s for s in state.steps.values() if s.work_kind == work_kind]
    return found[-1] if found else None


def _retry_or_give_up(step: Step, *, give_up: list[Decision]) -> list[Decision]:
    if step.attempt < MAX_ATTEMPTS:
        return [RequestWork(work_kind=step.work_kind, payload=step.payload, step_id=step.id)]
    return give_up


def _failure(step: Step) -> str:
    why = f"{step.error.code}: {step.error.message}" if step.error else str(step.status)
    return f"step {step.id} failed after {step.attempt} attempts ({why})"


class HelloSpec:
    """Seed 002's HelloSpec."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.work_kind = str(config.get("workKind") or "greet")

    def decide(self, state: EngineState) -> list[Decision]:
        step = _last(state, self.work_kind)
        if step is None:
            return [RequestWork(work_kind=self.work_kind, payload={"message": "Say hello"})]
        if step.status is StepStatus.DONE:
            return [Annotate(key="greeting", value=step.output), Finalize()]
        if step.status in (StepStatus.FAILED, StepStatus.BLOCKED):
            # As the seed: after the last attempt the goal is finalized all the same; the
            # step keeps its error and the result says why.
            return _retry_or_give_up(step, give_up=[Finalize(reason=_failure(step))])
        return []  # WAITING or IN_PROGRESS: the agent is on it


class MultiStepSpec:
    """plan → one work step per plan item (in order) → review."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.task = str(config.get("task") or config.get("goal") or "the goal")
        try:
            self.max_steps = int(config.get("maxSteps", 3))
        except (TypeError, ValueError):
            raise SpecError(
                f"specConfig.maxSteps must be a number: {config.get('maxSteps')!r}"
            ) from None
        if not 1 <= self.max_steps <= 100:
            raise SpecError(f"specConfig.maxSteps must be 1..100, got {self.max_steps}")

    def decide(self, state: EngineState) -> list[Decision]:
        plan = _last(state, "plan")
        if plan is None:
            return [RequestWork(work_kind="plan", payload=self._plan_payload())]
        if plan.status is not StepStatus.DONE:
            return self._unless_done(plan)
        items = parse_plan(plan.output or "", self.max_steps) or [self.task]
        decisions: list[Decision] = []
        if "plan" not in state.annotations:
            decisions.append(Annotate(key="plan", value=items))

        work = [s for s in state.steps.values() if s.work_kind == "work"]
        for index, item in enumerate(items):
            if index >= len(work):
                previous = work[-1].output if work else None
                payload = {
                    "task": self.task,
                    "item": item,
                    "index": index + 1,
                    "of": len(items),
                    "previous": (previous or "")[:_PREVIEW_CHARS] or None,
                }
                return [*decisions, RequestWork(work_kind="work", payload=payload)]
            if work[index].status is not StepStatus.DONE:
                return [*decisions, *self._unless_done(work[index])]

        review = _last(state, "review")
        if review is None:
            payload = {
                "task": self.task,
                "plan": items,
                "results": [(s.output or "")[:_PREVIEW_CHARS] for s in work],
            }
            return [*decisions, RequestWork(work_kind="review", payload=payload)]
        if review.status is not StepStatus.DONE:
            return [*decisions, *self._unless_done(review)]
        return [
            *decisions,
            Annotate(key="results", value={s.id: s.output_uri or s.output for s in work}),
            Annotate(key="review", value=review.output),
            Finalize(),
        ]

    def _plan_payload(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "maxSteps": self.max_steps,
            "format": "a numbered list, one step per line",
        }

    @staticmethod
    def _unless_done(step: Step) -> list[Decision]:
        if step.status in (StepStatus.FAILED, StepStatus.BLOCKED):
            give_up = Finalize(status=GoalStatus.FAILED, reason=_failure(step))
            return _retry_or_give_up(step, give_up=[give_up])
        return []


_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|step\s+\d+[:.)]?)\s+(.+?)\s*$", re.IGNORECASE)


def parse_plan(text: str, max_steps: int) -> list[str]:
    """Plan items from an agent's plan: a JSON list of strings, or list lines ("1. …", "- …")."""
    text = text.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(item).strip() for item in parsed if str(item).strip()][:max_steps]
    items = [m.group(1) for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    return items[:max_steps]


SPECS: dict[str, type[HelloSpec] | type[MultiStepSpec]] = {
    "hello": HelloSpec,
    "multi-step": MultiStepSpec,
}


def spec_for(spec_type: str, config: Mapping[str, Any]) -> Spec:
    spec = SPECS.get(spec_type)
    if spec is None:
        raise SpecError(f"unknown specType {spec_type!r}; known: {sorted(SPECS)}")
    return spec(config)
