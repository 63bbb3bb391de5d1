"""What every CLI command module shares: exit codes, how an error is printed, the controller
client, and how a refused or failed controller call ends the command.

The root `shopfloor.cli` and the subcommand modules (`shopfloor schedule …`, a kind's own
commands) import it; it imports none of them. Imported on every CLI call: keep it light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from shopfloor.client import ControllerError, ShopfloorClient
from shopfloor.settings import get_settings

# Exit codes, the same for every command (README: "Exit codes").
EXIT_PASSED = 0  # the job passed (or the command did what it was asked)
EXIT_FAILED = 1  # the job failed, was cancelled, or the command could not do it
EXIT_USAGE = 2  # the call was wrong: bad options or input, unknown job, wrong state
EXIT_UNREACHABLE = 3  # the controller or Temporal could not be reached: try again later
EXIT_RUNNING = 4  # `result` without --wait: the job has not ended yet


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Prints `error: message` on stderr and ends the command with `code`."""
    from rich.markup import escape

    from shopfloor.display import err_console

    # User text is never markup: "[/tmp/x]" in a message must print as it is.
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def fail_request(err: ControllerError) -> NoReturn:
    """A refused or failed call to the controller, with the exit code that says which."""
    if err.unreachable:
        fail(str(err), EXIT_UNREACHABLE)
    fail(str(err), EXIT_USAGE if err.refused else EXIT_FAILED)


@contextmanager
def controller_call() -> Iterator[None]:
    """Calls to the controller inside end the command as `fail_request` says on an error:
    `with controller_call(): state = make_client().status(job_id)`."""
    try:
        yield
    except ControllerError as err:
        fail_request(err)


def make_client() -> ShopfloorClient:
    return ShopfloorClient(get_settings())
