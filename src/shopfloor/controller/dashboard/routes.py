"""The dashboard's pages, live streams and buttons (server-rendered; htmx for live parts).

Every page works without JavaScript: the lists and job pages are complete HTML and every
button is a plain form. With JavaScript, htmx swaps in what a server-sent event stream pushes
when something changed (each stream polls Temporal every `dashboard_poll_s`).

Auth: with SHOPFLOOR_API_TOKEN set, a login form asks for the token once and sets an HttpOnly,
SameSite=Strict cookie holding a signed expiry (never the token). Every form post carries a
CSRF token (double submit: a SameSite=Strict cookie and the same value in the form) and must
come from our own origin (Origin, else Referer).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader
from pydantic import ValidationError
from temporalio.client import Client

from shopfloor import killswitch
from shopfloor.controller.dashboard import views
from shopfloor.controller.deps import (
    SESSION_COOKIE,
    credential_result,
    new_session,
    revoke_session,
    same_origin,
    signed_in,
    throttled,
)
from shopfloor.inputs import describe_errors
from shopfloor.jobstate import describe_job
from shopfloor.registry import JobKind, kind_for_workflow_type, kinds
from shopfloor.schedules import service as schedules
from shopfloor.settings import Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# The dashboard's own templates (the loader `directory` makes), then each kind's page.
templates.env.loader = ChoiceLoader([FileSystemLoader(str(HERE / "templates")), views.KindPages()])
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)

CSRF_COOKIE = "shopfloor_csrf"
KEEPALIVE_S = 15.0
router = APIRouter(prefix="/ui", include_in_schema=False)


# -- who may look, who may press --------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class LoginNeeded(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def need_login(request: Request) -> None:
    if not signed_in(request):
        raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


async def login_redirect(request: Request, exc: Exception) -> Response:
    """The handler of LoginNeeded (Starlette types every handler as taking any exception)."""
    assert isinstance(exc, LoginNeeded)
    return RedirectResponse(f"/ui/login?next={quote(exc.target)}", status_code=303)


def csrf_token(request: Request) -> str:
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


async def form_of(request: Request) -> dict[str, str]:
    """The posted form, once it passed the cross-site checks."""
    if not same_origin(request, _settings(request)):
        raise HTTPException(403, "cross-site request refused (Origin/Referer is not ours)")
    body = (await request.body()).decode(errors="replace")
    form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get("csrf", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = _settings(request)
    context.update(
        request=request,
        csrf=csrf_token(request),
        auth=settings.api_token is not None,
        logged_in=signed_in(request),
        msg=request.query_params.get("msg", ""),
        temporal_ui=settings.temporal_ui,
        api_docs=f"{settings.public_controller_url}/docs",
        ui_link=lambda job_id, run_id=None: views.temporal_ui_link(settings, job_id, run_id),
    )
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    _set_csrf_cookie(request, response)
    return response


def _set_csrf_cookie(request: Request, response: Response) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )


def back(path: str, msg: str = "") -> RedirectResponse:
    target = path + (f"?msg={quote(msg)}" if msg else "")
    return RedirectResponse(target, status_code=303)


async def _client(request: Request) -> Client:
    client: Client = await request.app.state.temporal.get()
    return client


# -- login --------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error="")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    settings = _settings(request)
    target = _safe_next(form.get("next", "/"))
    if settings.api_token is None:
        return back(target)
    try:
        throttled(request, "login")  # locked out: the token is not even checked
    except HTTPException as err:
        return render(request, "login.html", 429, next=target, error=err.detail)
    given = form.get("token", "").strip().encode()
    expected = settings.api_token.get_secret_value().encode()
    ok = hmac.compare_digest(given, expected)
    credential_result(request, "login", ok)
    if not ok:
        return render(request, "login.html", 401, next=target, error="That is not the token.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        new_session(settings),
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form_of(request)
    # Revoked on the server, not only forgotten by this browser: a copy stays refused.
    revoke_session(_settings(request), request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _safe_next(target: str) -> str:
    """Only a path on this site (no //host, no scheme): a login never sends people elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# -- the jobs list ------------------------------------------------------------------------------


def _filters(request: Request) -> views.Filters:
    p = request.query_params
    return views.Filters(
        kind=p.get("kind", ""),
        status=p.get("status", ""),
        q=p.get("q", ""),
        page=p.get("page", ""),
        outcome=p.get("outcome", ""),
    )


async def jobs_list(request: Request) -> Response:
    """The dashboard's front page (GET / for browsers)."""
    need_login(request)
    filters = _filters(request)
    client = await _client(request)
    try:
        page = await views.jobs_page(client, filters)
    except views.BadFilter as err:
        return render(
            request, "jobs.html", 400, page=None, filters=filters, kinds=kinds(), error=str(err)
        )
    return render(request, "jobs.html", page=page, filters=filters, kinds=kinds(), error="")


@router.get("/events/jobs")
async def jobs_events(request: Request) -> Response:
    """Server-sent events: the rows of the page asked for, each time they change."""
    if not signed_in(request):
        raise HTTPException(401, "sign in first")
    filters = _filters(request)
    client = await _client(request)

    async def rows() -> str:
        page = await views.jobs_page(client, filters)
        await views.add_progress(client, page.rows)
        return templates.get_template("_rows.html").render(
            rows=page.rows,
            ui_link=lambda job_id, run_id=None: views.temporal_ui_link(
                _settings(request), job_id, run_id
            ),
        )

    return _stream(request, "rows", rows)


# -- one job ------------------------------------------------------------------------------------


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str) -> Response:
    need_login(request)
    client = await _client(request)
    settings = _settings(request)
    try:
        view = await views.job_view(client, settings, job_id)
    except Exception as err:
        if _not_found(err):
            raise HTTPException(404, f"no job {job_id}") from None
        raise
    run_id = None
    try:
        run_id = (await client.get_workflow_handle(job_id).describe()).run_id
    except Exception:  # noqa: BLE001 - the link without a run id still opens the job
        pass
    return render(request, "job.html", **views.page_context(settings, view), run_id=run_id)


@router.get("/events/jobs/{job_id}")
async def job_events(request: Request, job_id: str) -> Response:
    """Server-sent events: the live part of a job page, each time it changes, until the job
    has ended (then only keep-alives: the page has its final state)."""
    if not signed_in(request):
        raise HTTPException(401, "sign in first")
    client = await _client(request)
    settings = _settings(request)
    seen_lines: list[str] = []
    csrf = csrf_token(request)

    async def live() -> str:
        view = await views.job_view(client, settings, job_id)
        for pending in view.status.progress:
            line = pending.details.get("last_line") if isinstance(pending.details, dict) else None
            if line and (not seen_lines or seen_lines[-1] != line):
                seen_lines.append(line)
                del seen_lines[:-40]
        html = templates.get_template("_live.html").render(
            **views.page_context(settings, view), seen_lines=seen_lines, csrf=csrf
        )
        return ("END" if view.terminal else "") + html

    return _stream(request, "live", live)


def _not_found(err: Exception) -> bool:
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND


def _stream(request: Request, event: str, render_once: Callable[[], Awaitable[str]]) -> Response:
    poll_s = _settings(request).dashboard_poll_s

    async def events() -> AsyncIterator[str]:
        last, last_sent_at, ended = None, time.monotonic(), False
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            if not ended:
                try:
                    html = await render_once()
                except Exception as err:  # noqa: BLE001 - Temporal away: keep the page, retry
                    html = None
                    yield f": not refreshed: {str(err)[:200]}\n\n".replace("\n:", " ")
                if html is not None:
                    ended = html.startswith("END")
                    html = html.removeprefix("END")
                    if html != last:
                        last, last_sent_at = html, time.monotonic()
                        data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
                        yield f"event: {event}\n{data}\n\n"
            if time.monotonic() - last_sent_at > KEEPALIVE_S:
                last_sent_at = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- buttons on a job -------------------------------------------------------------------------


@router.post("/jobs/{job_id}/signal/{name}")
async def job_signal(request: Request, job_id: str, name: str) -> Response:
    need_login(request)
    await form_of(request)
    client = await _client(request)
    kind = await _kind_of(client, job_id)
    signal = kind.signal(name)
    if signal is None or signal.model is not None:
        raise HTTPException(404, f"{kind.name} jobs have no button for signal {name!r}")
    await client.get_workflow_handle(job_id).signal(name, rpc_timeout=views.RPC)
    return back(f"/ui/jobs/{quote(job_id)}", f"sent {name}")


@router.post("/jobs/{job_id}/update/{name}")
async def job_update(request: Request, job_id: str, name: str) -> Response:
    need_login(request)
    form = await form_of(request)
    client = await _client(request)
    kind = await _kind_of(client, job_id)
    update = kind.update(name)
    if update is None:
        raise HTTPException(404, f"{kind.name} jobs have no update {name!r}")
    fields = {k: v for k, v in form.items() if k != "csrf"}
    try:
        body = update.model.model_validate(fields) if update.model else None
    except ValidationError as err:
        return back(f"/ui/jobs/{quote(job_id)}", f"{name} refused: {describe_errors(err)}")
    handle = client.get_workflow_handle(job_id)
    try:
        args = [body] if body is not None else []
        answer = await handle.execute_update(
            name, *args, result_type=update.result, rpc_timeout=timedelta_s(60)
        )
    except Exception as err:  # noqa: BLE001 - a rejected update is shown, not a 500
        message = getattr(err, "message", None) or str(err)
        cause = getattr(err, "cause", None)
        if cause is not None:
            message = getattr(cause, "message", None) or str(cause)
        return back(f"/ui/jobs/{quote(job_id)}", f"{name} refused: {message}")
    summary = json.dumps(views._dump(answer), default=str)
    return back(f"/ui/jobs/{quote(job_id)}", f"{name}: {summary}")


@router.post("/jobs/{job_id}/cancel")
async def job_cancel(request: Request, job_id: str) -> Response:
    need_login(request)
    await form_of(request)
    client = await _client(request)
    status = await describe_job(client, job_id, with_progress=False)
    if status.status != "RUNNING":
        return back(f"/ui/jobs/{quote(job_id)}", f"the job is {status.status}: nothing to cancel")
    await client.get_workflow_handle(job_id).cancel(rpc_timeout=views.RPC)
    return back(f"/ui/jobs/{quote(job_id)}", "cancel requested")


async def _kind_of(client: Client, job_id: str) -> JobKind:
    status = await describe_job(client, job_id, with_progress=False)
    if status.status != "RUNNING":
        raise HTTPException(409, f"job {job_id} is {status.status}")
    kind = kind_for_workflow_type(status.workflow_type)
    if kind is None:
        raise HTTPException(404, f"job {job_id} is no shopfloor kind's")
    return kind


def timedelta_s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# -- schedules and the kill switch ---------------------------------------------------------------


@router.get("/schedules")
async def schedules_page(request: Request) -> Response:
    need_login(request)
    client = await _client(request)
    settings = _settings(request)
    listed, switch = await asyncio.gather(
        schedules.list_schedules(client, settings),
        killswitch.read_state(client, settings.task_queue_prefix),
    )
    return render(request, "schedules.html", schedules=listed, switch=switch)


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(request: Request, schedule_id: str, action: str) -> Response:
    need_login(request)
    form = await form_of(request)
    client = await _client(request)
    settings = _settings(request)
    note = form.get("note", "").strip()[:500]
    done = f"{schedule_id}: {action} done"
    try:
        if action == "pause":
            await schedules.pause(client, settings, schedule_id, note or "paused in the dashboard")
        elif action == "unpause":
            await schedules.unpause(client, settings, schedule_id, note or "dashboard")
        elif action == "trigger":  # says whether the overlap policy skipped it
            done = (await schedules.trigger(client, settings, schedule_id)).message
        else:
            raise HTTPException(404, f"no schedule action {action!r}")
    except schedules.ScheduleNotFound as err:
        return back("/ui/schedules", str(err))
    return back("/ui/schedules", done)


@router.get("/kill-switch")
async def kill_switch_confirm(request: Request, action: str = "on") -> Response:
    """The confirmation step: what turning the switch on (or off) does, and a reason field."""
    need_login(request)
    if action not in ("on", "off"):
        raise HTTPException(400, "action is on or off")
    client = await _client(request)
    switch = await killswitch.read_state(client, _settings(request).task_queue_prefix)
    return render(request, "killswitch.html", action=action, switch=switch)


@router.post("/kill-switch")
async def kill_switch_flip(request: Request) -> Response:
    need_login(request)
    form = await form_of(request)
    action, reason = form.get("action"), form.get("reason", "").strip()[:500]
    if form.get("confirm") != "yes":
        return back(f"/ui/kill-switch?action={quote(action or 'on')}", "confirm first")
    client = await _client(request)
    settings = _settings(request)
    if action == "on":
        if not reason:
            return back("/ui/kill-switch?action=on", "give a reason")
        await schedules.kill_switch_on(client, settings, reason)
    elif action == "off":
        await schedules.kill_switch_off(client, settings, reason or "turned off in the dashboard")
    else:
        raise HTTPException(400, "action is on or off")
    return back("/ui/schedules", f"kill switch {action}")


__all__ = ["LoginNeeded", "jobs_list", "login_redirect", "router"]
