"""`shopfloor`: run the stack or its parts, and submit and watch jobs (through the controller)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal as signals
import sys
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from shopfloor.cli_common import (
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_RUNNING,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    controller_call,
    fail,
    make_client,
)
from shopfloor.processes import stop_process
from shopfloor.registry import JobKind, kind_named, kinds, load
from shopfloor.settings import Settings, get_settings

app = typer.Typer(
    help="Durable jobs for agent systems, on Temporal.",
    epilog="Exit codes: 0 job passed, 1 job failed, 2 usage error, 3 controller or Temporal "
    "unreachable, 4 still running.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Kind names and their aliases, as the CLI's choices (typer takes an Enum; mypy types only an
# Enum() of literal members, and these are the registry's).
KindName = Enum(  # type: ignore[misc]  # members known at run time only
    "KindName", {n: n for k in kinds().values() for n in (k.name, *k.aliases)}, type=str
)


def job_passed(result: dict[str, Any]) -> bool:
    """Did the job pass? Its outcome says (docs/outcomes.md); for a controller that gives
    none: COMPLETED, and its kind's own decision on the result."""
    if result.get("outcome") and result["outcome"] != "running":
        return bool(result["outcome"] == "passed")
    if result.get("status") != "COMPLETED":
        return False
    kind = kinds().get(result.get("kind") or "")
    body = result.get("result")
    return kind.passed(body) if kind and isinstance(body, dict) else True


def exit_for(result: dict[str, Any]) -> None:
    raise typer.Exit(EXIT_PASSED if job_passed(result) else EXIT_FAILED)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


# -- running the stack -------------------------------------------------------------------------


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    detach: Annotated[
        bool, typer.Option(help="run in the background; `shopfloor down` stops it")
    ] = False,
) -> None:
    """Start the embedded stack: Temporal dev server (unless SHOPFLOOR_TEMPORAL_ADDRESS is set),
    the controller and the workers. Ctrl-C, SIGTERM or SIGHUP stop them all."""
    from shopfloor.display import console
    from shopfloor.filemodes import make_private
    from shopfloor.stack import EmbeddedStack, StackError, pid_file

    settings = get_settings()
    problem, _ = bind_check(settings)
    if problem:  # before anything starts: the controller would refuse to, over and over
        fail(problem, 2)
    make_private(settings, create_data_dir=True)
    if detach:
        _up_detached(settings, workers)
        return
    stack = EmbeddedStack(settings, workers=workers, say=console.print)
    for sig in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP):
        signals.signal(sig, stack.request_stop)
    pids = pid_file(settings)
    try:
        stack.start()
        pids.parent.mkdir(parents=True, exist_ok=True)
        pids.write_text(str(os.getpid()))
        for name, url in stack.urls().items():
            console.print(f"[bold]{name:>12}[/bold]  {url}")
        console.print("ready; Ctrl-C to stop")
        stack.supervise()
    except (StackError, OSError) as err:
        stack.stop()
        pids.unlink(missing_ok=True)
        fail(str(err), EXIT_FAILED)
    console.print("stopping…")
    stack.stop()
    pids.unlink(missing_ok=True)


def _up_detached(settings: Any, workers: int) -> None:
    """`up` as a background process of its own session: it outlives this shell, its links keep
    working, and `shopfloor down` stops it."""
    import subprocess

    import httpx

    from shopfloor.stack import EmbeddedStack, StackError, pid_file

    running = _running_up(settings)
    if running:
        fail(f"a stack is already running from {settings.data_dir} (pid {running})", EXIT_USAGE)
    try:
        EmbeddedStack(settings, workers=workers).check_ports()  # refuse here, in the foreground
    except StackError as err:
        fail(str(err), EXIT_FAILED)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.data_dir.resolve() / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "up", "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = settings.public_controller_url
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the stack did not start (exit {proc.returncode}); see {log}", EXIT_FAILED)
        try:
            if pid_file(settings).exists() and httpx.get(f"{url}/healthz", timeout=2).is_success:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        stop_process(proc)
        fail(f"the stack was not healthy after 120 s; see {log}", EXIT_FAILED)
    print(f"stack running in the background (pid {proc.pid}, log {log})")
    for name, link in EmbeddedStack(settings).urls().items():
        print(f"{name:>12}  {link}")
    print("stop it with: shopfloor down")


def _running_up(settings: Any) -> int | None:
    from shopfloor.stack import pid_file

    try:
        pid = int(pid_file(settings).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="seconds to wait for it to stop")] = 60,
) -> None:
    """Stop the stack `shopfloor up` runs from this data dir (detached or not)."""
    settings = get_settings()
    pid = _running_up(settings)
    if pid is None:
        print(f"no stack running from {settings.data_dir}")
        return
    os.kill(pid, signals.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stopped the stack (pid {pid})")
            return
        time.sleep(0.2)
    fail(f"the stack (pid {pid}) did not stop within {timeout:g}s", EXIT_FAILED)


def _run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGINT, signals.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


LogFormat = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text or json (one object a line, with job ids); default SHOPFLOOR_LOG_FORMAT",
    ),
]


def _configure_logs(log_format: str | None) -> None:
    from shopfloor.observability.logs import FORMATS, configure_logging

    chosen = log_format or get_settings().log_format
    if chosen not in FORMATS:
        fail(f"--log-format must be one of {', '.join(FORMATS)}, not {chosen!r}", EXIT_USAGE)
    configure_logging(chosen)


@app.command()
def worker(
    kind: Annotated[list[str] | None, typer.Option(help="serve only these kinds")] = None,
    log_format: LogFormat = None,
) -> None:
    """Run a worker process (all job kinds unless --kind is given)."""
    from shopfloor.filemodes import make_private
    from shopfloor.worker import run_worker

    _configure_logs(log_format)
    settings = get_settings()
    make_private(settings)
    if kind:
        settings = settings.model_copy(update={"worker_kinds": kind})
    try:
        _run_until_signalled(lambda stop: run_worker(settings, stop=stop))
    except (ValueError, RuntimeError) as err:
        fail(str(err))


def bind_check(settings: Settings) -> tuple[str | None, str | None]:
    """(why the controller must not start, what to say when it starts). Without a token the
    API is open to whoever reaches it: loopback only, unless explicitly told otherwise."""
    import ipaddress

    if settings.api_token is not None:
        return None, None
    host = settings.controller_host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None, (
            f"no SHOPFLOOR_API_TOKEN: the API is open to anyone on this machine; listening on "
            f"{host}:{settings.controller_port} (loopback) only"
        )
    if settings.allow_open_api:
        return None, (
            f"no SHOPFLOOR_API_TOKEN and SHOPFLOOR_ALLOW_OPEN_API=true: the API on "
            f"{host}:{settings.controller_port} is open to anyone who reaches it"
        )
    return (
        f"refusing to listen on {host} without SHOPFLOOR_API_TOKEN: anyone who reaches it "
        "could run jobs. Set SHOPFLOOR_API_TOKEN, listen on 127.0.0.1, or set "
        "SHOPFLOOR_ALLOW_OPEN_API=true to run it open on purpose",
        None,
    )


@app.command()
def controller(log_format: LogFormat = None) -> None:
    """Run the HTTP controller (stateless; any number of replicas)."""
    import uvicorn

    from shopfloor.controller import create_app
    from shopfloor.filemodes import make_private

    _configure_logs(log_format)
    settings = get_settings()
    problem, note = bind_check(settings)
    if problem:
        fail(problem, 2)
    if note:
        from shopfloor.display import err_console

        err_console.print(note, markup=False, highlight=False, soft_wrap=True)
    make_private(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.controller_host,
        port=settings.controller_port,
        log_level="warning",
        log_config=None,  # our handlers (text or JSON), set up above
    )


# -- jobs ----------------------------------------------------------------------------------------


def _kind_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the options kinds declare (a script's `--env`) in its signature, which
    typer reads: their values arrive in its `**kind_options`."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    flags = {o.flag: o for k in kinds().values() for o in k.presentation.cli_options}
    for flag, option in flags.items():
        hint = Annotated[list[str] | None, typer.Option(f"--{flag}", help=option.help)]
        params.append(
            inspect.Parameter(
                _param(flag), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hint
            )
        )
    # inspect.signature (so typer) reads `__signature__`, which no function type declares.
    wider = signature.replace(parameters=params)
    command.__signature__ = wider  # type: ignore[attr-defined]  # for inspect.signature: above
    return command


def _param(flag: str) -> str:
    return flag.replace("-", "_")


def _apply_kind_options(
    kind: JobKind, given: dict[str, list[str] | None], fields: dict[str, Any]
) -> None:
    own = {_param(o.flag): o for o in kind.presentation.cli_options}
    for name, values in given.items():
        if not values:
            continue
        if name not in own:
            fail(f"--{name.replace('_', '-')} is not an option of {kind.name} jobs", 2)
        try:
            own[name].apply(values, fields)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None


@app.command()
@_kind_options
def submit(
    kind: Annotated[KindName, typer.Argument(help="job kind")],
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    wait: Annotated[
        bool, typer.Option(help="wait, showing progress, and print the result")
    ] = False,
    key: Annotated[str | None, typer.Option(help="idempotency key: one key, one job")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="input field KEY=VALUE (JSON)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    **kind_options: list[str] | None,
) -> None:
    """Submit a job built from FILE (e.g. a Python script) and optional input fields."""
    from shopfloor.display import console, show_result, wait_with_progress

    job_kind = kind_named(kind.value)
    assert job_kind is not None  # the choices come from the registry
    options = dict(_parse_option(o) for o in option or [])
    _apply_kind_options(job_kind, kind_options, options)
    if job_kind.input_from_file is None:
        fail(f"{job_kind.name} jobs cannot be built from a file; use the HTTP API", 2)
    try:
        job = job_kind.input_from_file(file, options)
    except ValidationError as err:
        fail(f"invalid {kind.value} job: {err}", 2)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        fail(f"cannot read {file}: {err}", 2)
    client = make_client()
    with controller_call():
        submitted = client.submit(job_kind.name, job.model_dump(mode="json"), key=key)
        if not wait:
            if as_json:
                print(json.dumps(submitted))
            else:
                note = "" if submitted["created"] else " (existing job for this key)"
                console.print(f"{submitted['job_id']}{note}")
            return
        result = wait_with_progress(client, submitted["job_id"])
    if as_json:
        print(json.dumps(result))
    else:
        show_result(result, passed=job_passed(result))
    exit_for(result)


@app.command()
def status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A job's status and live progress."""
    from shopfloor.display import console, progress_text

    with controller_call():
        state = make_client().status(job_id)
    if as_json:
        print(json.dumps(state, indent=2))  # plain print: valid JSON, piped or not
    else:
        console.print(progress_text(state))


@app.command()
def result(
    job_id: str,
    wait: Annotated[float, typer.Option(help="seconds to wait for the end")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A job's result. Exit code 0 passed, 1 failed, 4 still running."""
    from shopfloor.display import show_result

    with controller_call():
        res = make_client().result(job_id, wait_s=wait)
    if as_json:
        print(json.dumps(res))
    elif res["status"] == "RUNNING":
        print(f"{job_id} is still running")
    else:
        show_result(res, passed=job_passed(res))
    if res["status"] == "RUNNING":
        raise typer.Exit(EXIT_RUNNING)
    exit_for(res)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a running job (its processes are killed; the result says `cancelled`)."""
    with controller_call():
        print(make_client().cancel(job_id)["status"])


# -- steering and watching running jobs --------------------------------------------------------


def _declared(family: str) -> str:
    """`NAME (kind, kind)` for every name the registry's kinds declare in `family`."""
    offered: dict[str, list[str]] = {}
    for kind in kinds().values():
        for decl in getattr(kind, family):
            offered.setdefault(decl.name, []).append(kind.name)
    return ", ".join(f"{n} ({', '.join(ks)})" for n, ks in sorted(offered.items())) or "none"


def _json_body(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        fail(f"--json is not valid JSON: {err}", EXIT_USAGE)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


JsonBody = Annotated[str | None, typer.Option("--json", help="the body, as JSON")]


@app.command(help=f"Send a signal to a running job. Signals: {_declared('signals')}.")
def signal(job_id: str, name: str, body: JsonBody = None) -> None:
    with controller_call():
        _print_json(make_client().signal(job_id, name, _json_body(body)))


@app.command(help=f"Ask a running job a query. Queries: {_declared('queries')}.")
def query(job_id: str, name: str) -> None:
    with controller_call():
        _print_json(make_client().query(job_id, name))


@app.command(
    help=f"Apply an update to a running job and print its answer. Updates: {_declared('updates')}."
)
def update(job_id: str, name: str, body: JsonBody = None) -> None:
    with controller_call():
        _print_json(make_client().update(job_id, name, _json_body(body)))


@app.command("setup-search-attributes")
def setup_search_attributes() -> None:
    """Register the search attributes every job records its outcome in (ShopfloorOutcome,
    ShopfloorKind) on the configured Temporal namespace: once per cluster, before the first
    worker starts. The embedded dev server (`shopfloor up`) registers them itself."""
    from shopfloor.outcome import SEARCH_ATTRIBUTES, create_search_attributes
    from shopfloor.temporal import connect

    async def register() -> list[str]:
        return await create_search_attributes(await connect(get_settings()))

    try:
        created = asyncio.run(register())
    except RuntimeError as err:  # no server, or not allowed (the operator service)
        fail(f"could not register the search attributes: {err}", EXIT_UNREACHABLE)
    for name, kind in SEARCH_ATTRIBUTES.items():
        print(f"{name} ({kind}): {'created' if name in created else 'already registered'}")
    # The SDK's core runtime threads outlive the client and abort the interpreter's shutdown
    # ("PyGILState_Release"): the work is done, leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_PASSED)


@app.command("list")
def list_jobs(
    kind: Annotated[KindName | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="Running, Completed, Failed, …")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="passed, failed, cancelled, timed_out, running")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent jobs, newest first."""
    from shopfloor.display import show_jobs

    with controller_call():
        job_kind = kind_named(kind.value) if kind else None
        name = job_kind.name if job_kind else None
        jobs = make_client().list(kind=name, status=status, limit=limit, outcome=outcome)
    if as_json:
        print(json.dumps(jobs))
    else:
        show_jobs(jobs)


def _add_command_groups() -> None:
    from shopfloor.schedules.cli import kill_switch_app, schedule_app

    app.add_typer(schedule_app, name="schedule")
    app.add_typer(kill_switch_app, name="kill-switch")
    # Kinds with commands of their own (`shopfloor pipeline start …`) bring a typer app.
    for kind in kinds().values():
        own = kind.presentation
        if own.cli:
            app.add_typer(load(own.cli), name=own.cli_name or kind.name)


_add_command_groups()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
