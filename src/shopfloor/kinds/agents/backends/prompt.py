"""What an LLM agent is told for a step: the work kind, its payload and the user's
instructions. Shared by the Anthropic and gateway agents so both see the same task."""

from __future__ import annotations

import json

from shopfloor.kinds.agents.models import AgentRequest

SYSTEM = (
    "You are one agent in a coordinated, multi-step job. Do exactly the piece of work you are "
    "given and reply with its result only."
)


def user_prompt(request: AgentRequest) -> str:
    lines = [
        f"Work kind: {request.work_kind}",
        f"Step: {request.step_id} (attempt {request.attempt})",
        "Payload:",
        json.dumps(request.payload, indent=2, sort_keys=True, default=str),
    ]
    if request.instructions:
        lines += ["", "Instructions from the user (follow them):"]
        lines += [f"- {text}" for text in request.instructions]
    return "\n".join(lines)
