"""A Temporal server outage does not re-run a running script (issue 14, must-show 5).

While the server is away, a running activity cannot heartbeat; when it is back it has timed the
attempt out and retries it. The worker keeps the lost attempt's run (`Runs`), and the retry,
arriving on the same worker within the adoption window, adopts it instead of starting the
script again. Here: that registry in-process (adopting a finished run, one still running, a
finished result; a run nobody adopts killed when its window ends; a worker shutdown or a
requested cancel killing rather than keeping), then the outage itself with real processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from shopfloor.artifacts import LocalArtifactStore
from shopfloor.devserver import DevServer
from shopfloor.kinds.scripts.activities import ScriptActivities
from shopfloor.kinds.scripts.models import ScriptInput
from shopfloor.registry import WorkerContext, kind_named
from shopfloor.settings import Settings
from shopfloor.usercode import Runs, Zygotes, zygotes
from tests.helpers import REPO, Stack, free_port, wait_until

# Appends "<tag> start", then "<tag> tick" every 0.1 s for `seconds`, then "<tag> end" and a
# file in out/: an append-only side effect, and a way to see whether the run still goes on.
EFFECT_SCRIPT = """
import os, sys, time
def effect(what):
    fd = os.open({effects!r}, os.O_WRONLY | os.O_APPEND)
    os.write(fd, ("%s %s\\n" % ({tag!r}, what)).encode())
    os.close(fd)
effect("start")
print("cwd", os.getcwd(), flush=True)
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    time.sleep(0.1)
    effect("tick")
effect("end")
open("out/result.txt", "w").write({tag!r})
print("finished", {tag!r})
"""


EFFECTS_BASE = REPO / ".shopfloor" / "outage"


@pytest.fixture
def effects() -> Iterator[Path]:
    """An append-only file every sandboxed script may write: under the repo's `.shopfloor/`,
    in the directory the worker shares with its runs (`sandbox_shared_dirs`: a run's root has
    nothing else of the host's to write), world-writable (it runs as a uid of its own)."""
    base = EFFECTS_BASE
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="effects-", dir=base))
    root.chmod(0o777)
    path = root / "effects.log"
    path.touch()
    path.chmod(0o666)
    yield path
    shutil.rmtree(root, ignore_errors=True)


def lines(path: Path, tag: str, what: str) -> int:
    return path.read_text().splitlines().count(f"{tag} {what}")


def job(effects: Path, tag: str, seconds: float) -> ScriptInput:
    source = EFFECT_SCRIPT.format(effects=str(effects), tag=tag, seconds=seconds)
    return ScriptInput(source=source, timeout_s=120)


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple]:
    """The worker side in this process: the script kind's activities on the worker's zygotes."""
    root = tmp_path_factory.mktemp("outage-artifacts")
    served = [kind_named("script")]
    EFFECTS_BASE.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=root, sandbox_shared_dirs=[EFFECTS_BASE])
    async with WorkerContext(
        settings=settings, artifacts=LocalArtifactStore(root), served=served
    ) as ctx:
        yield ctx, await ctx.shared(zygotes)


def worker_with_window(shared: tuple, window_s: float) -> tuple[ScriptActivities, Runs]:
    """Activities with a `Runs` registry of their own (its own adoption window)."""
    ctx, base = shared
    runs = Runs(window_s)
    own: Zygotes = dataclasses.replace(base, runs=runs)
    return ScriptActivities(ctx, own), runs


def attempt(n: int, workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, workflow_id=workflow_id, activity_id="1", attempt=n, heartbeat_timeout=None
    )
    return env


LOST = ActivityCancellationDetails(not_found=True)


async def until(predicate, *, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def lose_attempt_1(acts: ScriptActivities, effects: Path, tag: str, seconds: float):
    """Attempt 1 starts the script; Temporal then loses it (as after a server outage)."""
    first = attempt(1, tag)
    task = asyncio.create_task(first.run(acts.run_script, job(effects, tag, seconds)))
    await until(lambda: lines(effects, tag, "start") == 1, what="the script to start")
    first.cancel(LOST)
    with pytest.raises(asyncio.CancelledError):
        await task


def run_dir_of(result_stdout: str) -> Path:
    return Path(result_stdout.split("cwd ", 1)[1].split("\n", 1)[0])


async def test_a_later_attempt_adopts_the_finished_run_of_a_lost_one(shared, effects) -> None:
    acts, runs = worker_with_window(shared, 60)
    await lose_attempt_1(acts, effects, "adopt-finished", 1.0)
    assert len(runs.executions) == 1  # kept, though its attempt is gone
    await until(lambda: lines(effects, "adopt-finished", "end") == 1, what="the run to end")

    beats: list = []
    second = attempt(2, "adopt-finished")
    second.on_heartbeat = lambda *d: beats.append(d)
    result = await second.run(acts.run_script, job(effects, "adopt-finished", 1.0))

    assert result.exit_code == 0 and "finished adopt-finished" in result.stdout_tail
    assert result.attempt == 2 and "result.txt" in result.artifacts
    assert lines(effects, "adopt-finished", "start") == 1  # the script ran once
    assert len(runs.executions) == 0
    assert not run_dir_of(result.stdout_tail).exists()  # freed once adopted and collected
    await runs.close()


async def test_a_later_attempt_adopts_a_run_still_going_and_heartbeats(shared, effects) -> None:
    acts, runs = worker_with_window(shared, 60)
    await lose_attempt_1(acts, effects, "adopt-running", 4.0)
    beats: list = []
    second = attempt(2, "adopt-running")
    second.on_heartbeat = lambda *d: beats.append(d)
    result = await second.run(acts.run_script, job(effects, "adopt-running", 4.0))
    assert result.exit_code == 0 and result.killed_reason is None
    assert lines(effects, "adopt-running", "start") == 1
    assert lines(effects, "adopt-running", "end") == 1
    assert beats and "elapsed_s" in beats[-1][0]  # the adopting attempt heartbeats
    await runs.close()


async def test_a_retry_arriving_before_the_lost_attempt_is_cancelled_takes_its_run(
    shared, effects
) -> None:
    """The retry can reach the worker before the old attempt hears it was lost: it takes the
    run over, and the old attempt stops waiting for it (its outcome is not its to report)."""
    acts, runs = worker_with_window(shared, 60)
    tag = "adopt-early"
    first = asyncio.create_task(attempt(1, tag).run(acts.run_script, job(effects, tag, 2.0)))
    await until(lambda: lines(effects, tag, "start") == 1, what="the script to start")
    second = asyncio.create_task(attempt(2, tag).run(acts.run_script, job(effects, tag, 2.0)))
    with pytest.raises(ApplicationError, match="took its run over"):
        await first
    result = await second
    assert result.exit_code == 0 and lines(effects, tag, "start") == 1
    assert len(runs.executions) == 0
    await runs.close()


async def test_a_finished_result_is_returned_to_a_later_attempt(shared, effects) -> None:
    """The run finished and its activity returned, but Temporal never got the result (the
    server away as it completed): the retry returns that result instead of running again."""
    acts, runs = worker_with_window(shared, 60)
    tag = "kept-result"
    first = await attempt(1, tag).run(acts.run_script, job(effects, tag, 0.2))
    again = await attempt(2, tag).run(acts.run_script, job(effects, tag, 0.2))
    assert again == first and lines(effects, tag, "start") == 1
    # Another workflow's activity with the same id is not that one.
    other = await attempt(2, tag + "-other").run(acts.run_script, job(effects, tag, 0.2))
    assert other.exit_code == 0 and lines(effects, tag, "start") == 2
    await runs.close()


async def test_a_run_nobody_adopts_is_killed_and_freed_when_the_window_ends(
    shared, effects
) -> None:
    acts, runs = worker_with_window(shared, 1.0)
    tag = "expire"
    await lose_attempt_1(acts, effects, tag, 60)
    assert len(runs.executions) == 1
    await until(lambda: len(runs.executions) == 0, what="the window to end")
    await asyncio.sleep(0.5)  # the discard kills, waits and frees
    ticks = lines(effects, tag, "tick")
    await asyncio.sleep(1.0)
    assert lines(effects, tag, "tick") == ticks, "the run goes on after its window"
    assert lines(effects, tag, "end") == 0
    # A retry after the window starts the script afresh.
    result = await attempt(2, tag).run(acts.run_script, job(effects, tag, 0.2))
    assert result.exit_code == 0 and lines(effects, tag, "start") == 2
    assert not run_dir_of(result.stdout_tail).exists()
    await runs.close()


@pytest.mark.parametrize(
    "details",
    [
        ActivityCancellationDetails(worker_shutdown=True),
        ActivityCancellationDetails(timed_out=True, worker_shutdown=True),
    ],
    ids=["worker-shutdown", "timed-out-while-shutting-down"],
)
async def test_a_worker_shutdown_kills_the_run_rather_than_keeping_it(
    shared, effects, details
) -> None:
    acts, runs = worker_with_window(shared, 60)
    tag = f"shutdown-{details.timed_out}"
    env = attempt(1, tag)
    task = asyncio.create_task(env.run(acts.run_script, job(effects, tag, 60)))
    await until(lambda: lines(effects, tag, "start") == 1, what="the script to start")
    env.cancel(details)
    with pytest.raises(asyncio.CancelledError):  # not a `cancelled` result: it runs again
        await task
    assert len(runs.executions) == 0
    ticks = lines(effects, tag, "tick")
    await asyncio.sleep(1.0)
    assert lines(effects, tag, "tick") == ticks, "the run goes on after the worker stopped"
    await runs.close()


async def test_a_requested_cancel_still_kills_and_says_cancelled(shared, effects) -> None:
    acts, runs = worker_with_window(shared, 60)
    tag = "requested"
    env = attempt(1, tag)
    task = asyncio.create_task(env.run(acts.run_script, job(effects, tag, 60)))
    await until(lambda: lines(effects, tag, "start") == 1, what="the script to start")
    env.cancel()  # cancel_requested
    result = await task
    assert result.killed_reason == "cancelled"
    assert len(runs.executions) == 0
    ticks = lines(effects, tag, "tick")
    await asyncio.sleep(1.0)
    assert lines(effects, tag, "tick") == ticks
    await runs.close()


async def test_the_worker_stopping_kills_runs_kept_for_adoption(shared, effects) -> None:
    acts, runs = worker_with_window(shared, 60)
    tag = "kept-at-stop"
    await lose_attempt_1(acts, effects, tag, 60)
    assert len(runs.executions) == 1
    await runs.close()  # what the worker's lifespan does when it stops
    assert len(runs.executions) == 0
    ticks = lines(effects, tag, "tick")
    await asyncio.sleep(1.0)
    assert lines(effects, tag, "tick") == ticks


# -- the outage, with real processes -----------------------------------------------------------

OUTAGE_SCRIPT = """
import os, time
fd = os.open({effects!r}, os.O_WRONLY | os.O_APPEND)
os.write(fd, b"{tag} start\\n")
os.close(fd)
time.sleep({seconds})
print("done {tag}")
"""


def _heartbeating(stack: Stack, job_id: str) -> bool:
    """The job's run is in a heartbeating activity (handed over from its local attempt)."""
    progress = stack.http.get(f"/jobs/{job_id}").json()["progress"]
    return bool(progress and progress[0].get("details"))


def _workflow_task_lost(address: str, job_id: str) -> bool:
    async def lost() -> bool:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(job_id).fetch_history()
        return any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT for e in history.events
        )

    return asyncio.run(lost())


def test_server_killed_for_20s_each_running_script_runs_once(tmp_path: Path, effects) -> None:
    """Must-show 5: the dev server SIGKILLed for 20 s while 10 scripts with an append-only
    side effect run, then restarted on the same SQLite file: all 10 jobs complete, and each
    script's side effect is in the file exactly once. Five are in heartbeating activities when
    the server goes (their attempts time out: later attempts adopt the runs); five have just
    started, in their local attempts (their workflow tasks time out: the tasks' retries adopt
    the runs the local attempts handed over while the server was away)."""
    server = DevServer(data_dir=tmp_path / "temporal", port=free_port(), ui_port=free_port())
    server.start()
    # Slots for all 10 jobs, and for their retries while lost attempts still hold theirs.
    env = {
        "SHOPFLOOR_WORKER_MAX_CONCURRENT_ACTIVITIES": "32",
        "SHOPFLOOR_SANDBOX_SHARED_DIRS": json.dumps([str(EFFECTS_BASE)]),
    }
    stack = Stack(temporal_address=server.address, tmp=tmp_path, extra_env=env)
    try:
        stack.start_worker("--kind", "script")
        stack.start_controller()
        tags = [f"outage-{i}" for i in range(10)]
        ids = {}
        for i, tag in enumerate(tags):
            if i == 5:
                wait_until(
                    lambda: all(_heartbeating(stack, ids[t]) for t in tags[:5]),
                    timeout_s=60,
                    what="the first five runs to be handed over",
                )
            source = OUTAGE_SCRIPT.format(effects=str(effects), tag=tag, seconds=40)
            ids[tag] = stack.submit("script", {"source": source, "timeout_s": 300})
        wait_until(
            lambda: all(lines(effects, t, "start") >= 1 for t in tags),
            timeout_s=120,
            what="all 10 scripts to start",
        )
        server.kill()
        time.sleep(20)
        server.start()
        results = {tag: stack.result(ids[tag], wait_s=300) for tag in tags}
        lost_tasks = [t for t in tags[5:] if _workflow_task_lost(server.address, ids[t])]
    finally:
        stack.stop()
        server.stop()
    for tag, res in results.items():
        assert res["status"] == "COMPLETED", res
        assert res["result"]["exit_code"] == 0 and f"done {tag}" in res["result"]["stdout_tail"]
    ran = {tag: lines(effects, tag, "start") for tag in tags}
    assert ran == dict.fromkeys(tags, 1), effects.read_text()
    # The outage did lose attempts: the handed-over runs' results came from later attempts,
    # and some local attempts' workflow tasks were lost with the server.
    assert all(results[t]["result"]["attempt"] > 1 for t in tags[:5]), results
    assert lost_tasks, "no local attempt's workflow task was lost: the second case did not happen"
