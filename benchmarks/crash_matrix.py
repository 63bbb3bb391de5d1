"""Crash matrix: N script jobs while worker, controller and Temporal dev server processes are
SIGKILLed at random (and restarted after a short delay; the server on the same SQLite file).

    .venv/bin/python benchmarks/crash_matrix.py --jobs 100 --kills 9

Each job's script first appends its token to a shared effects file (its side effect), then
sleeps 1-3 s and prints its token. Jobs are submitted over HTTP with an idempotency key by a
client that retries whatever fails: connection errors (the controller is down) and 503s
(Temporal is down) are what a client is told to expect while a part is down; any other 5xx is a
defect. After each kill and restart a probe job measures recovery: kill → the next job done.

At the end, Temporal itself is asked about every job: how many runs its workflow id has and how
many `run_script` activities completed in its history. It prints:

- completed: the job's result is exit code 0 with its own token in stdout;
- lost: submitted, and no such result before the deadline (or never accepted);
- duplicate results: a job with two workflow runs or two completed activities (must be 0);
- duplicate side effects: a job whose script ran more than once (its token appears twice in
  the effects file). Activities run at least once: a script whose worker is SIGKILLed while it
  runs is run again on another worker after the heartbeat timeout. The job still has one
  result; the side effect before the kill happened twice.
- HTTP statuses ≥ 500 seen by the client, and connection errors;
- recovery times per process type.

The effects file lives under the repository's `.shopfloor/` (git-ignored), not /tmp: a
sandboxed script may get a private /tmp, and runs as another user (the file is mode 0666).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.helpers: the Stack and Proc the tests use

from temporalio.client import Client  # noqa: E402

from shopfloor.devserver import DevServer  # noqa: E402
from shopfloor.jobstate import runs_in_history  # noqa: E402
from shopfloor.processes import free_port  # noqa: E402
from tests.helpers import Stack  # noqa: E402

PARTS = ("worker", "controller", "server")
EXPECTED_5XX = {503}  # Temporal unreachable: the controller says so; anything else is a defect
JOB_SCRIPT = """\
import os, time
fd = os.open({effects!r}, os.O_WRONLY | os.O_APPEND)
os.write(fd, b"{token} %.3f\\n" % time.time())
os.close(fd)
time.sleep({sleep_s})
print("done {token}")
"""


@dataclass
class Job:
    token: str
    probe: bool = False
    job_id: str | None = None
    result: dict | None = None
    submitted_at: float = 0.0


@dataclass
class Kill:
    part: str
    at: float  # monotonic
    wall_at: float  # time.time(), to compare with the scripts' side effects
    restarted_at: float = 0.0
    recovered_at: float | None = None  # the probe job's result arrived

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.at


@dataclass
class Report:
    jobs: int
    probes: int
    workers: int
    seed: int
    wall_s: float
    completed: int
    lost: list[str]
    duplicate_results: list[str]
    side_effects: Counter  # token -> times the script ran
    reruns_after: Counter  # process type -> script re-runs that followed a kill of it
    statuses: Counter  # HTTP status >= 500 -> count
    unavailable_at: list[float]  # when each 503 was seen (monotonic)
    connection_errors: int
    kills: list[Kill]
    errors: list[str] = field(default_factory=list)  # what went wrong in the harness itself

    @property
    def duplicate_side_effects(self) -> dict[str, int]:
        return {t: n for t, n in self.side_effects.items() if n > 1}

    @property
    def unexpected_5xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if code not in EXPECTED_5XX)

    @property
    def unavailable_while_up(self) -> int:
        """503s seen outside every outage (from a kill of the server or the controller to the
        next job done after it): Temporal said unavailable while all parts were up."""
        windows = [
            (k.at, k.recovered_at if k.recovered_at is not None else math.inf)
            for k in self.kills
            if k.part in ("server", "controller")
        ]
        return sum(1 for t in self.unavailable_at if not any(a <= t <= b for a, b in windows))

    def kills_of(self, part: str) -> list[Kill]:
        return [k for k in self.kills if k.part == part]

    def table(self) -> str:
        total = self.jobs + self.probes
        dup_runs = sum(n - 1 for n in self.duplicate_side_effects.values())
        lines = [
            f"crash matrix: {self.jobs} jobs + {self.probes} probe jobs, {self.workers} workers, "
            f"kills: "
            + ", ".join(f"{len(self.kills_of(p))} {p}" for p in PARTS)
            + f" (seed {self.seed}), {self.wall_s:.0f} s",
            "",
            f"  {'completed':<38}{self.completed} / {total}",
            f"  {'lost':<38}{len(self.lost)}",
            f"  {'duplicate results':<38}{len(self.duplicate_results)}",
            f"  {'duplicate side effects':<38}{len(self.duplicate_side_effects)} jobs "
            f"({dup_runs} extra script runs"
            + "".join(f"; {n} after a {p} kill" for p, n in sorted(self.reruns_after.items()))
            + ")",
            f"  {'HTTP 503 while a part was down':<38}"
            f"{self.statuses.get(503, 0) - self.unavailable_while_up}",
            f"  {'HTTP 503 while all were up':<38}{self.unavailable_while_up}",
            f"  {'HTTP other 5xx':<38}{self.unexpected_5xx}"
            + (
                " (" + ", ".join(f"{c}x{n}" for c, n in sorted(self.statuses.items())) + ")"
                if self.unexpected_5xx
                else ""
            ),
            f"  {'connection errors (controller down)':<38}{self.connection_errors}",
            "",
            f"  {'recovery: kill → next job done':<38}{'median':>8}{'max':>8}{'n':>4}",
        ]
        for part in PARTS:
            times = [k.recovery_s for k in self.kills_of(part) if k.recovery_s is not None]
            if times:
                lines.append(
                    f"  {part:<38}{statistics.median(times):>7.1f}s{max(times):>7.1f}s"
                    f"{len(times):>4}"
                )
        if self.errors:
            lines += ["", "  harness errors:"] + [f"    {e}" for e in self.errors]
        return "\n".join(lines)


class _Client:
    """The submitting client: retries until it gets an answer, counting what it saw."""

    def __init__(self, url: str, stats: _Stats) -> None:
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(30, connect=5))
        self.stats = stats

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, deadline: float, **kw: object) -> httpx.Response:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path}: no answer before the deadline")
            try:
                r = self.http.request(method, path, **kw)  # type: ignore[arg-type]
            except httpx.TransportError:  # refused, reset, or cut off mid-answer by a kill
                self.stats.count_connection_error()
                time.sleep(0.3)
                continue
            if r.status_code >= 500:
                self.stats.count_status(r.status_code, f"{method} {path}: {r.text[:200]}")
                time.sleep(0.3)
                continue
            return r

    def submit(self, job: Job, source: str, deadline: float) -> str:
        r = self._call(
            "POST",
            "/jobs/script",
            deadline,
            json={"source": source, "timeout_s": 120},
            headers={"Idempotency-Key": job.token},
        )
        if r.status_code not in (200, 201):
            raise RuntimeError(f"submit {job.token}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["job_id"]

    def result(self, job_id: str, deadline: float) -> dict:
        while True:
            wait = max(0.0, min(10.0, deadline - time.monotonic()))
            r = self._call("GET", f"/jobs/{job_id}/result", deadline, params={"wait": wait})
            if r.status_code == 200:
                return r.json()
            if r.status_code != 202:
                raise RuntimeError(f"result {job_id}: HTTP {r.status_code}: {r.text[:300]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"result {job_id}: still running at the deadline")


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.connection_errors = 0
        self.samples: list[str] = []
        self.unavailable_at: list[float] = []

    def count_status(self, code: int, sample: str) -> None:
        with self.lock:
            self.statuses[code] += 1
            if code == 503:
                self.unavailable_at.append(time.monotonic())
            if code not in EXPECTED_5XX and len(self.samples) < 5:
                self.samples.append(sample)

    def count_connection_error(self) -> None:
        with self.lock:
            self.connection_errors += 1


class CrashMatrix:
    def __init__(
        self,
        *,
        root: Path,
        effects_dir: Path,
        jobs: int,
        kills_per_part: int,
        workers: int = 2,
        seed: int = 0,
        gap_s: tuple[float, float] = (1.0, 4.0),
        down_s: tuple[float, float] = (0.5, 3.0),
        job_sleep_s: tuple[float, float] = (1.0, 3.0),
        deadline_s: float = 600.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.root, self.n_jobs, self.kills_per_part = root, jobs, kills_per_part
        self.n_workers, self.seed = workers, seed
        self.gap_s, self.down_s, self.job_sleep_s = gap_s, down_s, job_sleep_s
        self.deadline_s, self.log = deadline_s, log
        self.rng = random.Random(seed)
        self.effects = effects_dir / "effects.log"
        self.run_id = uuid.uuid4().hex[:8]
        self.stats = _Stats()
        self.jobs: list[Job] = []
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self.jobs_lock = threading.Lock()

    # -- the parts ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.effects.parent.mkdir(parents=True, exist_ok=True)
        self.effects.parent.chmod(0o777)
        self.effects.touch()
        self.effects.chmod(0o666)  # scripts may run as another user
        self.server = DevServer(
            data_dir=self.root / "temporal", port=free_port(), ui_port=free_port()
        )
        self.server.start()
        # The effects file's directory is shared with every run (a run's root has nothing else
        # of the host's to write).
        shared = json.dumps([str(self.effects.parent)])
        self.stack = Stack(
            temporal_address=self.server.address,
            tmp=self.root,
            extra_env={"SHOPFLOOR_SANDBOX_SHARED_DIRS": shared},
        )
        for _ in range(self.n_workers):
            self.stack.start_worker("--kind", "script")
        self.stack.start_controller()

    def _stop(self) -> None:
        self.stack.stop()
        self.server.stop()

    def _kill(self, part: str) -> None:
        if part == "worker":
            alive = [w for w in self.stack.workers if w.alive()]
            self.rng.choice(alive).sigkill()
        elif part == "controller":
            assert self.stack.controller is not None
            self.stack.controller.sigkill()
        else:
            self.server.kill()

    def _restart(self, part: str) -> None:
        if part == "worker":
            self.stack.start_worker("--kind", "script")
        elif part == "controller":
            self.stack.start_controller()
        else:
            self.server.start()

    # -- jobs --------------------------------------------------------------------------------

    def _source(self, job: Job) -> str:
        sleep_s = 0 if job.probe else round(self.rng.uniform(*self.job_sleep_s), 2)
        return JOB_SCRIPT.format(effects=str(self.effects), token=job.token, sleep_s=sleep_s)

    def _new_job(self, kind: str) -> Job:
        with self.jobs_lock:
            job = Job(token=f"cm-{self.run_id}-{kind}-{len(self.jobs):04d}", probe=kind == "probe")
            self.jobs.append(job)
        return job

    def _submit_workload(self, client: _Client, interval_s: float, deadline: float) -> None:
        for _ in range(self.n_jobs):
            job = self._new_job("job")
            job.submitted_at = time.monotonic()
            try:
                job.job_id = client.submit(job, self._source(job), deadline)
            except Exception as e:
                self.errors.append(f"{job.token}: {e}")
            time.sleep(interval_s * self.rng.uniform(0.5, 1.5))

    def _kill_loop(self, client: _Client, deadline: float) -> None:
        plan = [p for p in PARTS for _ in range(self.kills_per_part)]
        self.rng.shuffle(plan)
        for part in plan:
            time.sleep(self.rng.uniform(*self.gap_s))
            kill = Kill(part=part, at=time.monotonic(), wall_at=time.time())
            self.kills.append(kill)
            self._kill(part)
            time.sleep(self.rng.uniform(*self.down_s))
            try:
                self._restart(part)
            except Exception as e:
                self.errors.append(f"restart {part}: {e}")
                self._restart(part)  # once more; a second failure ends the run
            kill.restarted_at = time.monotonic()
            probe = self._new_job("probe")
            try:
                probe.job_id = client.submit(probe, self._source(probe), deadline)
                probe.result = client.result(probe.job_id, deadline)
                kill.recovered_at = time.monotonic()
            except Exception as e:
                self.errors.append(f"probe after {part} kill: {e}")
            self.log(
                f"  killed {part:<10} recovered in "
                + (f"{kill.recovery_s:.1f} s" if kill.recovery_s is not None else "—")
            )

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Report:
        t0 = time.monotonic()
        deadline = t0 + self.deadline_s
        self._start()
        try:
            submitter = _Client(self.stack.url, self.stats)
            killer = _Client(self.stack.url, self.stats)
            # Spread the workload over about as long as the kills take (~7 s a kill here).
            interval = 7.0 * self.kills_per_part * len(PARTS) / max(self.n_jobs, 1)
            threads = [
                threading.Thread(
                    target=self._submit_workload, args=(submitter, interval, deadline)
                ),
                threading.Thread(target=self._kill_loop, args=(killer, deadline)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.log("  kills done; collecting results")
            for job in self.jobs:
                if job.job_id and job.result is None:
                    try:
                        job.result = submitter.result(job.job_id, deadline)
                    except Exception as e:
                        self.errors.append(f"{job.token}: {e}")
            submitter.close()
            killer.close()
            histories = asyncio.run(self._temporal_view())
        finally:
            self._stop()
        return self._report(histories, time.monotonic() - t0)

    async def _temporal_view(self) -> dict[str, tuple[int, int]]:
        """job id -> (workflow runs, completed activities, local ones included), as Temporal
        records them."""
        client = await Client.connect(self.server.address)
        view: dict[str, tuple[int, int]] = {}
        for job in self.jobs:
            if not job.job_id:
                continue
            runs = [w async for w in client.list_workflows(f'WorkflowId = "{job.job_id}"')]
            history = await client.get_workflow_handle(job.job_id).fetch_history()
            done = sum(1 for _, completed in runs_in_history(history.events) if completed)
            view[job.job_id] = (len(runs), done)
        return view

    def _report(self, view: dict[str, tuple[int, int]], wall_s: float) -> Report:
        runs_of: dict[str, list[float]] = {}
        for line in self.effects.read_text().splitlines():
            token, _, at = line.partition(" ")
            runs_of.setdefault(token, []).append(float(at))
        ran = Counter({token: len(times) for token, times in runs_of.items()})
        reruns_after: Counter = Counter()
        for times in runs_of.values():
            times.sort()
            for before, again in zip(times, times[1:], strict=False):
                # The latest kill between two runs of one script is what made it run again.
                kill = max(
                    (k for k in self.kills if before <= k.wall_at <= again),
                    key=lambda k: k.wall_at,
                    default=None,
                )
                reruns_after[kill.part if kill else "no"] += 1
        completed, lost, duplicates = 0, [], []
        for job in self.jobs:
            res = (job.result or {}).get("result") or {}
            ok = (
                (job.result or {}).get("status") == "COMPLETED"
                and res.get("exit_code") == 0
                and f"done {job.token}" in res.get("stdout_tail", "")
            )
            if ok:
                completed += 1
            else:
                lost.append(job.token)
            runs, done = view.get(job.job_id or "", (0, 0))
            if runs > 1 or done > 1:
                duplicates.append(f"{job.token}: {runs} workflow runs, {done} completed activities")
            if ok and ran[job.token] == 0:
                self.errors.append(f"{job.token}: completed, but its side effect is missing")
        return Report(
            jobs=sum(1 for j in self.jobs if not j.probe),
            probes=sum(1 for j in self.jobs if j.probe),
            workers=self.n_workers,
            seed=self.seed,
            wall_s=wall_s,
            completed=completed,
            lost=lost,
            duplicate_results=duplicates,
            side_effects=Counter({j.token: ran[j.token] for j in self.jobs}),
            reruns_after=reruns_after,
            statuses=self.stats.statuses,
            unavailable_at=self.stats.unavailable_at,
            connection_errors=self.stats.connection_errors,
            kills=self.kills,
            errors=self.errors + self.stats.samples,
        )


def effects_root() -> Path:
    """A fresh directory for the effects file, under the repo's git-ignored `.shopfloor/`."""
    base = REPO / ".shopfloor" / "crash-matrix"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="effects-", dir=base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--kills", type=int, default=9, help="kills of each process type")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=1200.0, help="seconds for the whole run")
    args = ap.parse_args()
    effects = effects_root()
    with tempfile.TemporaryDirectory(prefix="shopfloor-crash-") as tmp:
        matrix = CrashMatrix(
            root=Path(tmp),
            effects_dir=effects,
            jobs=args.jobs,
            kills_per_part=args.kills,
            workers=args.workers,
            seed=args.seed,
            deadline_s=args.deadline,
        )
        try:
            report = matrix.run()
        finally:
            shutil.rmtree(effects, ignore_errors=True)
    print()
    print(report.table())
    if report.duplicate_side_effects:
        print("\n  scripts that ran twice:", ", ".join(sorted(report.duplicate_side_effects)))
    bad = (
        report.lost
        or report.duplicate_results
        or report.unexpected_5xx
        or report.unavailable_while_up
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
