"""Phased jobs' activities: an agent turn through the gateway, and a plain HTTP step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from temporalio import activity

from shopfloor.egress import EgressPolicy, EgressRefused
from shopfloor.jobs import invalid_input
from shopfloor.killswitch import read_state, refuse_if_on
from shopfloor.kinds.phased.gateway import (
    MAX_INLINE_TEXT,
    heartbeating,
    network_error,
    raise_for_status,
)
from shopfloor.kinds.phased.models import (
    AgentTurnRequest,
    AgentTurnResult,
    HttpRequest,
    HttpResponse,
)
from shopfloor.kinds.phased.settings import GatewaySettings
from shopfloor.kinds.phased.stubs import AGENT_TURN, HTTP_STEP
from shopfloor.registry import ActivitiesIterator, WorkerContext

MAX_REDIRECTS = 5


@asynccontextmanager
async def http_pool(ctx: WorkerContext) -> AsyncIterator[httpx.AsyncClient]:
    """One connection pool per worker process for every kind's outgoing HTTP, every
    connection checked by the egress policy (redirects too: each hop is a new connection)."""
    async with EgressPolicy.from_settings(ctx.settings).client(
        follow_redirects=False, max_redirects=MAX_REDIRECTS
    ) as client:
        yield client


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    acts = PhasedActivities(ctx, await ctx.shared(http_pool))
    yield [acts.agent_turn, acts.http_step]


class PhasedActivities:
    def __init__(self, ctx: WorkerContext, http: httpx.AsyncClient) -> None:
        self.ctx = ctx
        self.http = http

    @activity.defn(name=AGENT_TURN.name)
    async def agent_turn(self, turn: AgentTurnRequest) -> AgentTurnResult:
        settings = self.ctx.settings
        gateway = settings.of(GatewaySettings)
        if not gateway.url:
            raise invalid_input("this worker has no gateway: set SHOPFLOOR_GATEWAY_URL")
        # Checked where turns start: a paused schedule can still be triggered by hand.
        refuse_if_on(await read_state(activity.client(), settings.task_queue_prefix))
        headers = {}
        if gateway.token is not None:
            headers["Authorization"] = f"Bearer {gateway.token.get_secret_value()}"
        url = gateway.url.rstrip("/") + "/api/cron/fire"
        what = f"agent turn {turn.job_id}"
        try:
            response = await heartbeating(
                self.http.post(
                    url,
                    json={"job_id": turn.job_id},
                    headers=headers,
                    timeout=gateway.timeout_s,
                ),
                what,
            )
        except EgressRefused as err:
            raise err.final(what) from None
        except httpx.HTTPError as err:
            raise network_error(err, what) from None
        raise_for_status(response, what, expected=[200, 201, 202, 204])
        info = activity.info()
        text, uri = await asyncio.to_thread(
            self._keep, response.text, f"turns/{turn.job_id}-{info.attempt}.txt"
        )
        return AgentTurnResult(
            job_id=turn.job_id,
            status_code=response.status_code,
            text=text,
            text_uri=uri,
            attempt=info.attempt,
        )

    @activity.defn(name=HTTP_STEP.name)
    async def http_step(self, request: HttpRequest) -> HttpResponse:
        what = f"{request.method} {request.url}"
        try:
            response = await heartbeating(
                self.http.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    json=request.body,
                    timeout=self.ctx.settings.of(GatewaySettings).timeout_s,
                    follow_redirects=True,
                ),
                what,
            )
        except EgressRefused as err:
            raise err.final(what) from None
        except httpx.InvalidURL as err:  # e.g. `0177.0.0.1`: httpx refuses what it cannot parse
            raise invalid_input(f"{what}: invalid URL: {err}") from None
        except httpx.HTTPError as err:
            raise network_error(err, what) from None
        raise_for_status(response, what, expected=request.expect_status)
        info = activity.info()
        text, uri = await asyncio.to_thread(
            self._keep, response.text, f"http/{info.activity_id}-{info.attempt}.txt"
        )
        try:
            body = response.json() if uri is None and response.text else None
        except ValueError:
            body = None
        return HttpResponse(
            status_code=response.status_code, text=text, json_body=body, text_uri=uri
        )

    def _keep(self, text: str, name: str) -> tuple[str, str | None]:
        """Small text inline; a large one in the artifact store, referenced by URI."""
        if len(text) <= MAX_INLINE_TEXT:
            return text, None
        job_id = activity.info().workflow_id
        assert job_id is not None, "a job's activities run in its workflow"
        uri = self.ctx.artifacts.put_bytes(job_id, name, text.encode())
        return text[:500], uri
