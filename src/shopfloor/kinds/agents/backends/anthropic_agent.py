"""AnthropicAgent: one Messages API call per step, through the `anthropic` SDK.

The client is built once per worker with `max_retries=0`: Temporal owns retries (so a retry
survives a worker crash and shows in the history). Key, base URL and default model come from
the worker's settings, never from job input.

  429                      → RATE_LIMITED with the server's retry-after (a durable timer)
  prompt too long / 413    → CONTEXT_EXCEEDED
  5xx, 529, network        → raised: the activity is retried with backoff
  other 4xx (bad key, …)   → FAIL (PROVIDER_ERROR): a retry cannot fix it
  refused by the egress policy (shopfloor.egress) → FAIL, naming the rule
  stop_reason max_tokens   → PARTIAL: the next call goes on from the text so far
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shopfloor.egress import EgressPolicy, EgressRefused
from shopfloor.kinds.agents.backends.prompt import SYSTEM, user_prompt
from shopfloor.kinds.agents.models import (
    AgentReply,
    AgentRequest,
    AnthropicAgentConfig,
    ReplyStatus,
    StepError,
    Usage,
)
from shopfloor.kinds.agents.settings import AgentSettings
from shopfloor.retry_after import retry_after_s
from shopfloor.settings import Settings

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import MessageParam

_TOO_LONG = ("prompt is too long", "context window", "too many tokens", "context_length")


class AnthropicAgent:
    def __init__(
        self, settings: Settings, *, policy: EgressPolicy, timeout_s: float = 600.0
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.timeout_s = timeout_s
        self._client: anthropic.AsyncAnthropic | None = None

    def client(self) -> anthropic.AsyncAnthropic:
        # Imported on first use: a worker that never runs an Anthropic step does not need it.
        import anthropic
        import httpx2  # the SDK's own HTTP stack: the egress policy guards its connections

        if self._client is None:
            key = self.settings.of(AgentSettings).anthropic_api_key
            if key is None:
                raise RuntimeError("no Anthropic key on this worker (SHOPFLOOR_ANTHROPIC_API_KEY)")
            self._client = anthropic.AsyncAnthropic(
                api_key=key.get_secret_value(),
                base_url=self.settings.of(AgentSettings).anthropic_base_url,
                max_retries=0,
                timeout=self.timeout_s,
                http_client=self.policy.client(lib=httpx2, timeout=self.timeout_s),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def step(self, request: AgentRequest) -> AgentReply:
        if self.settings.of(AgentSettings).anthropic_api_key is None:
            return self._fail(
                request,
                "no Anthropic key on this worker: set "
                "SHOPFLOOR_ANTHROPIC_API_KEY in the workers' environment",
            )
        import anthropic

        config = AnthropicAgentConfig.model_validate(request.agent_config)
        messages: list[MessageParam] = [{"role": "user", "content": user_prompt(request)}]
        if request.partial:
            # Prefill: the model goes on from where its cut-off reply stopped.
            messages.append({"role": "assistant", "content": request.partial})
        try:
            message = await self.client().messages.create(
                model=config.model or self.settings.of(AgentSettings).anthropic_model,
                max_tokens=config.max_tokens,
                system=config.system or SYSTEM,
                messages=messages,
            )
        except anthropic.RateLimitError as err:
            return AgentReply(
                goal_id=request.goal_id,
                step_id=request.step_id,
                status=ReplyStatus.RATE_LIMITED,
                error=StepError(code="RATE_LIMITED", message=_message(err)),
                retry_after_s=retry_after_s(err.response.headers),
                usage=Usage(calls=1),
            )
        except anthropic.APIConnectionError as err:
            if isinstance(err.__cause__, EgressRefused):  # the same URL is refused every time
                return self._fail(request, str(err.__cause__))
            raise
        except anthropic.APIStatusError as err:
            if err.status_code >= 500:
                raise  # 500, 529 overloaded: worth retrying
            if err.status_code == 413 or any(s in _message(err).lower() for s in _TOO_LONG):
                return AgentReply(
                    goal_id=request.goal_id,
                    step_id=request.step_id,
                    status=ReplyStatus.CONTEXT_EXCEEDED,
                    error=StepError(code="CONTEXT_EXCEEDED", message=_message(err)),
                    usage=Usage(calls=1),
                )
            return self._fail(request, f"HTTP {err.status_code}: {_message(err)}")
        text = "".join(block.text for block in message.content if block.type == "text")
        cut_off = message.stop_reason == "max_tokens"
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=ReplyStatus.PARTIAL if cut_off else ReplyStatus.OK,
            output=(request.partial or "") + text,
            usage=Usage(
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                calls=1,
            ),
        )

    @staticmethod
    def _fail(request: AgentRequest, message: str) -> AgentReply:
        return AgentReply(
            goal_id=request.goal_id,
            step_id=request.step_id,
            status=ReplyStatus.FAIL,
            error=StepError(code="PROVIDER_ERROR", message=message),
            usage=Usage(calls=1),
        )


def _message(err: anthropic.APIStatusError) -> str:
    return str(getattr(err, "api_message", None) or err.message)
