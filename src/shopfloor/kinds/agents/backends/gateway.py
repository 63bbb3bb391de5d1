"""GatewayAgent: an HTTP agent endpoint (seed 003's gateway runs agent turns this way).

POST <SHOPFLOOR_AGENT_GATEWAY_URL> with the step as JSON (the camelCase `AgentRequest`) and
`Authorization: Bearer <SHOPFLOOR_AGENT_GATEWAY_TOKEN>`; the answer is JSON with `output`
(or `content`), optional `status` (OK, FAIL, PARTIAL, RATE_LIMITED, CONTEXT_EXCEEDED),
`usage` {inputTokens, outputTokens} and `error`. HTTP 429 → RATE_LIMITED (Retry-After),
5xx and network errors → retried by Temporal, other 4xx → FAIL.
"""

from __future__ import annotations

from typing import Any

import httpx

from shopfloor.egress import EgressRefused
from shopfloor.kinds.agents.models import AgentReply, AgentRequest, ReplyStatus, StepError, Usage
from shopfloor.kinds.agents.settings import AgentSettings
from shopfloor.retry_after import retry_after_s
from shopfloor.settings import Settings


class GatewayAgent:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    async def step(self, request: AgentRequest) -> AgentReply:
        url = self.settings.of(AgentSettings).agent_gateway_url
        if not url:
            return self._reply(
                request,
                ReplyStatus.FAIL,
                error="no gateway on this worker: "
                "set SHOPFLOOR_AGENT_GATEWAY_URL in the workers' environment",
            )
        headers = {}
        secret = self.settings.of(AgentSettings).agent_gateway_token
        if secret is not None:
            token = secret.get_secret_value()
            headers["Authorization"] = f"Bearer {token}"
        body = request.model_dump(mode="json", exclude={"job_id"})
        try:
            response = await self.http.post(url, json=body, headers=headers)
        except EgressRefused as err:  # the same URL is refused every time: no retry
            return self._reply(request, ReplyStatus.FAIL, error=str(err))
        if response.status_code == 429:
            return self._reply(
                request,
                ReplyStatus.RATE_LIMITED,
                error="gateway rate limit",
                retry_after=retry_after_s(response.headers),
            )
        if response.status_code >= 500:
            response.raise_for_status()  # retried by Temporal
        if response.status_code >= 400:
            return self._reply(
                request,
                ReplyStatus.FAIL,
                error=f"HTTP {response.status_code}: {response.text[:500]}",
            )
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            return self._reply(request, ReplyStatus.FAIL, error="gateway answered non-JSON")
        try:
            status = ReplyStatus(str(data.get("status", "OK")).upper())
        except ValueError:
            return self._reply(
                request,
                ReplyStatus.FAIL,
                error=f"gateway answered unknown status {data.get('status')!r}",
            )
        usage = data.get("usage") or {}
        error = data.get("error")
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=status,
            output=data.get("output", data.get("content")),
            error=StepError(code=status.value, message=str(error)) if error else None,
            retry_after_s=data.get("retryAfterS"),
            usage=Usage(
                input_tokens=int(usage.get("inputTokens", 0)),
                output_tokens=int(usage.get("outputTokens", 0)),
                calls=1,
            ),
        )

    @staticmethod
    def _reply(
        request: AgentRequest, status: ReplyStatus, *, error: str, retry_after: float | None = None
    ) -> AgentReply:
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=status,
            error=StepError(
                code="PROVIDER_ERROR" if status is ReplyStatus.FAIL else status.value, message=error
            ),
            retry_after_s=retry_after,
            usage=Usage(calls=1),
        )
