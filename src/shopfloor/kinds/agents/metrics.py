"""What a worker counts of its agent calls with prometheus-client (the agent kind's
`WorkerBundle.observer`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from shopfloor.observability.instruments import as_json


class AgentMetrics:
    """Agent calls and tokens by provider."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "shopfloor_agent_calls",
            "agent steps run (one provider call each, its retries counted again), by provider "
            "and the reply's status (OK, FAIL, PARTIAL, RATE_LIMITED, CONTEXT_EXCEEDED, or "
            "error when the activity raised)",
            ["provider", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "shopfloor_agent_tokens",
            "tokens the providers reported, by provider and direction (input, output)",
            ["provider", "direction"],
            registry=registry,
        )

    def observe(
        self, activity_type: str, args: list[Any], result: Any, error: BaseException | None
    ) -> None:
        """From an agent step's request and reply (or its error)."""
        if activity_type != "run_agent_step":
            return
        request = as_json(args[0]) if args else None
        if not isinstance(request, dict):
            return
        agent = str(request.get("agentType") or request.get("agent_type") or "unknown")
        provider = agent.removesuffix("-agent")
        if error is not None:
            self.calls.labels(provider, "error").inc()
            return
        reply = as_json(result)
        if not isinstance(reply, dict):
            return
        self.calls.labels(provider, str(reply.get("status", "unknown"))).inc()
        usage = reply.get("usage") or {}
        for direction in ("input", "output"):
            count = usage.get(f"{direction}Tokens", usage.get(f"{direction}_tokens", 0))
            if isinstance(count, int) and count > 0:
                self.tokens.labels(provider, direction).inc(count)
