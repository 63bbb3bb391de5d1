"""Crash matrix: N script jobs (and agent, phased and pipeline jobs) while worker, controller
and Temporal dev server processes are SIGKILLed at random (and restarted after a short delay;
the server on the same SQLite file).

    .venv/bin/python benchmarks/crash_matrix.py --jobs 100 --agents 10 --phased 10 --kills 9

The other kinds go through the same kills, their submissions shuffled among the scripts':

- agent: a mock-agent `multi-step` goal (plan, 2 work steps, review; think time per call)
  over `POST /jobs/agent`; it must end COMPLETED with its goal COMPLETED and all 4 steps;
- phased: `delay`, `http`, `delay`, `http` over `POST /jobs/phased`; each `http` step GETs
  `/hit/<job>/<step>` on an HTTP server the harness runs on 127.0.0.1 (the workers' egress
  allow-list names its port). The hits are the side effects: each step at least once;
- pipeline: one definition file (two `tests/pipelines/services/svc.py` services on free
  ports) in `SHOPFLOOR_PIPELINE_DIRS`, started by name when the workload starts, left running
  through every kill, then checked — exactly one live process per service, found by the
  pipeline's marker in /proc — stopped (`POST /pipelines/<name>/stop`), and checked again:
  none left.

For every job: one workflow run (runs ended by continue-as-new do not count), and the
`ShopfloorOutcome` search attribute of its last run (from `describe()`) is `passed` — when
the server has that attribute registered (the operator service's list); otherwise the report
says "outcome attribute: not available".

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.helpers: the Stack and Proc the tests use

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402
from temporalio.common import SearchAttributeKey  # noqa: E402

from shopfloor.devserver import DevServer  # noqa: E402
from shopfloor.jobstate import runs_in_history  # noqa: E402
from shopfloor.processes import free_port  # noqa: E402
from tests.helpers import Stack  # noqa: E402
from tests.pipelines.support import kill_marked, marked_by_prefix  # noqa: E402

PARTS = ("worker", "controller", "server")
KINDS = ("script", "agent", "phased", "pipeline")  # the report's rows (probes are scripts)
EXPECTED_5XX = {503}  # Temporal unreachable: the controller says so; anything else is a defect
OUTCOME_ATTRIBUTE = "ShopfloorOutcome"  # issue 22's outcome model (a Keyword)
OUTCOME_KEY = SearchAttributeKey.for_keyword(OUTCOME_ATTRIBUTE)
SVC = REPO / "tests" / "pipelines" / "services" / "svc.py"
AGENT_STEPS = ["plan-1", "work-1", "work-2", "review-1"]  # a multi-step goal, maxSteps 2
PHASED_HITS = ("hit1", "hit2")  # the phased job's `http` steps
PIPELINE_SERVICES = ("alpha", "beta")
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
    kind: str = "script"  # script, agent, phased, pipeline (a probe is a script)
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
class KindRow:
    """What the matrix found for one job kind (probes are counted with the scripts)."""

    kind: str
    jobs: int = 0
    completed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_results: list[str] = field(default_factory=list)
    extra_side_effects: int | None = None  # None: the kind has no side effect the harness sees
    kills_during: Counter = field(default_factory=Counter)  # part -> kills while a job ran
    spans: list[tuple[float, float]] = field(default_factory=list)  # each job's start, end
    outcomes: Counter = field(default_factory=Counter)  # ShopfloorOutcome -> jobs
    wrong_outcome: list[str] = field(default_factory=list)  # jobs whose outcome is not passed
    notes: list[str] = field(default_factory=list)


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
    kinds: dict[str, KindRow] = field(default_factory=dict)
    # Whether the server has the ShopfloorOutcome search attribute registered: only then is
    # each job's outcome read (and the test asserts on it).
    outcome_available: bool = False

    @property
    def duplicate_side_effects(self) -> dict[str, int]:
        return {t: n for t, n in self.side_effects.items() if n > 1}

    @property
    def unexpected_5xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if code not in EXPECTED_5XX)

    @property
    def wrong_outcomes(self) -> list[str]:
        return [j for row in self.kinds.values() for j in row.wrong_outcome]

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
        mix = ", ".join(
            f"{r.jobs - (self.probes if r.kind == 'script' else 0)} {r.kind}"
            for r in self.kinds.values()
            if r.jobs
        )
        lines = [
            f"crash matrix: {self.jobs} jobs ({mix}) + {self.probes} probe jobs, "
            f"{self.workers} workers, kills: "
            + ", ".join(f"{len(self.kills_of(p))} {p}" for p in PARTS)
            + f" (seed {self.seed}), {self.wall_s:.0f} s",
            "",
            f"  {'completed':<38}{self.completed} / {total}",
            f"  {'lost':<38}{len(self.lost)}",
            f"  {'duplicate results':<38}{len(self.duplicate_results)}",
            f"  {'duplicate side effects (scripts)':<38}{len(self.duplicate_side_effects)} jobs "
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
            f"  {'outcome attribute':<38}"
            + (
                f"{OUTCOME_ATTRIBUTE} registered: {len(self.wrong_outcomes)} jobs not passed"
                if self.outcome_available
                else "not available (the server has no " + OUTCOME_ATTRIBUTE + ")"
            ),
            "",
            f"  {'kind':<10}{'jobs':>6}{'done':>6}{'lost':>6}{'dup':>5}"
            f"{'extra effects':>15}  {'kills during (w/c/s)':<22}outcome",
        ]
        for r in self.kinds.values():
            if not r.jobs:
                continue
            effects = "—" if r.extra_side_effects is None else str(r.extra_side_effects)
            outcome = (
                ", ".join(f"{o} {n}" for o, n in sorted(r.outcomes.items()))
                if self.outcome_available
                else "not available"
            )
            during = "/".join(str(r.kills_during[p]) for p in PARTS)
            lines.append(
                f"  {r.kind:<10}{r.jobs:>6}{r.completed:>6}{len(r.lost):>6}"
                f"{len(r.duplicate_results):>5}{effects:>15}  {during:<22}{outcome}"
            )
            if r.spans:
                took = [b - a for a, b in r.spans]
                lines.append(
                    f"    start to end: median {statistics.median(took):.1f} s, "
                    f"max {max(took):.1f} s"
                )
            if r.kind == "script" and self.probes:
                lines.append(f"    (the {self.probes} probe jobs included)")
            lines += [f"    {n}" for n in r.notes]
        lines += [
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

    def call(self, method: str, path: str, deadline: float, **kw: object) -> httpx.Response:
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

    def submit(self, job: Job, kind: str, body: dict, deadline: float) -> str:
        r = self.call(
            "POST", f"/jobs/{kind}", deadline, json=body, headers={"Idempotency-Key": job.token}
        )
        if r.status_code not in (200, 201):
            raise RuntimeError(f"submit {job.token}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["job_id"]

    def result(self, job_id: str, deadline: float) -> dict:
        while True:
            wait = max(0.0, min(10.0, deadline - time.monotonic()))
            r = self.call("GET", f"/jobs/{job_id}/result", deadline, params={"wait": wait})
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


@dataclass
class _Seen:
    """What Temporal records of a job."""

    results: int = 0  # workflow runs not ended by continue-as-new
    script_runs: int = 0  # completed runs of a script job's script, local ones included
    outcome: str | None = None  # the last run's ShopfloorOutcome (when the server has it)
    span: tuple[float, float] | None = None  # first run's start, last run's close (wall)


class _Hits:
    """The phased jobs' `http` steps' target: counts GET /hit/<job>/<step> (their side effect)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        lock = threading.Lock()
        counts = self.counts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/hit/"):
                    with lock:
                        counts[self.path.removeprefix("/hit/")] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CrashMatrix:
    def __init__(
        self,
        *,
        root: Path,
        effects_dir: Path,
        jobs: int,
        kills_per_part: int,
        agents: int = 0,
        phased: int = 0,
        pipeline: bool = False,
        workers: int = 2,
        seed: int = 0,
        gap_s: tuple[float, float] = (1.0, 4.0),
        down_s: tuple[float, float] = (0.5, 3.0),
        job_sleep_s: tuple[float, float] = (1.0, 3.0),
        deadline_s: float = 600.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.root, self.n_jobs, self.kills_per_part = root, jobs, kills_per_part
        self.n_agents, self.n_phased, self.with_pipeline = agents, phased, pipeline
        self.n_workers, self.seed = workers, seed
        self.gap_s, self.down_s, self.job_sleep_s = gap_s, down_s, job_sleep_s
        self.deadline_s, self.log = deadline_s, log
        self.rng = random.Random(seed)
        self.effects = effects_dir / "effects.log"
        self.run_id = uuid.uuid4().hex[:8]
        self.pipeline_name = f"cm-{self.run_id}"
        self.stats = _Stats()
        self.jobs: list[Job] = []
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self.jobs_lock = threading.Lock()
        self.pipeline_notes: list[str] = []
        self.pipeline_ok = False

    # -- the parts ---------------------------------------------------------------------------

    @property
    def worker_kinds(self) -> list[str]:
        kinds = ["script"]
        kinds += ["agent"] if self.n_agents else []
        kinds += ["phased"] if self.n_phased else []
        kinds += ["pipeline"] if self.with_pipeline else []
        return [a for k in kinds for a in ("--kind", k)]

    def _pipeline_definition(self) -> Path:
        """Two real services on free ports, in a definition file the workers and controller
        find by name (SHOPFLOOR_PIPELINE_DIRS)."""
        services = []
        for name in PIPELINE_SERVICES:
            port = free_port()
            services.append(
                {
                    "name": name,
                    "command": ["python3", str(SVC), "--name", name, "--port", str(port)],
                    "cwd": str(SVC.parent),
                    "depends_on": services[-1:] and [services[-1]["name"]],
                    "health": {
                        "http": f"http://127.0.0.1:{port}/health",
                        "interval_s": 0.2,
                        "timeout_s": 1,
                        "start_timeout_s": 30,
                    },
                    "stop_timeout_s": 3,
                }
            )
        definition = {
            "name": self.pipeline_name,
            "description": "the crash matrix's pipeline",
            "supervise_every_s": 1,
            "restart": {"backoff_initial_s": 0.5, "backoff_max_s": 2},
            "services": services,
        }
        folder = self.root / "pipelines"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.pipeline_name}.yaml"
        path.write_text(yaml.safe_dump(definition, sort_keys=False))
        return folder

    def _start(self) -> None:
        self.effects.parent.mkdir(parents=True, exist_ok=True)
        self.effects.parent.chmod(0o777)
        self.effects.touch()
        self.effects.chmod(0o666)  # scripts may run as another user
        self.hits = _Hits()
        self.server = DevServer(
            data_dir=self.root / "temporal", port=free_port(), ui_port=free_port()
        )
        self.server.start()
        # The effects file's directory is shared with every run (a run's root has nothing else
        # of the host's to write); phased `http` steps may reach the harness's HTTP server.
        env = {
            "SHOPFLOOR_SANDBOX_SHARED_DIRS": json.dumps([str(self.effects.parent)]),
            "SHOPFLOOR_EGRESS_ALLOW": f"127.0.0.1:{self.hits.port}",
        }
        if self.with_pipeline:
            env["SHOPFLOOR_PIPELINE_DIRS"] = json.dumps([str(self._pipeline_definition())])
            env["SHOPFLOOR_PIPELINE_HOST"] = self.pipeline_name
        self.stack = Stack(temporal_address=self.server.address, tmp=self.root, extra_env=env)
        for _ in range(self.n_workers):
            self.stack.start_worker(*self.worker_kinds)
        self.stack.start_controller()

    def _stop(self) -> None:
        self.stack.stop()
        self.server.stop()
        self.hits.close()
        if self.with_pipeline:
            kill_marked(self.pipeline_name)  # a run that failed leaves no service behind

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
            self.stack.start_worker(*self.worker_kinds)
        elif part == "controller":
            self.stack.start_controller()
        else:
            self.server.start()

    # -- jobs --------------------------------------------------------------------------------

    def _body(self, job: Job) -> dict:
        if job.kind == "agent":
            return {
                "goalId": job.token,
                "specType": "multi-step",
                "specConfig": {"task": "tidy the workshop", "maxSteps": 2},
                "agentType": "mock-agent",
                # Think time per agent call: 4 calls, a goal takes 10-14 s (through 1-2 kills).
                "agentConfig": {"delayMs": int(self.rng.uniform(2.5, 3.5) * 1000)},
                "maxIterations": 10,
            }
        if job.kind == "phased":
            # Short steps: a retry comes 1 s after a failed attempt (default 30 s), an attempt
            # on a killed worker times out after 5 s.
            retry = {"initial": "1s", "maximum": "2s", "attempts": 20}
            hit = [
                {
                    "id": step,
                    "type": "http",
                    "url": f"{self.hits.url}/hit/{job.token}/{step}",
                    "retry": retry,
                    "timeout": "5s",
                }
                for step in PHASED_HITS
            ]
            steps = [
                {"id": "wait1", "type": "delay", "duration": "4s"},
                hit[0],
                {"id": "wait2", "type": "delay", "duration": "5s"},
                hit[1],
            ]
            return {"definition": {"name": job.token, "steps": steps}}
        sleep_s = 0 if job.probe else round(self.rng.uniform(*self.job_sleep_s), 2)
        source = JOB_SCRIPT.format(effects=str(self.effects), token=job.token, sleep_s=sleep_s)
        return {"source": source, "timeout_s": 120}

    def _submit(self, client: _Client, job: Job, deadline: float) -> str:
        return client.submit(job, "script" if job.probe else job.kind, self._body(job), deadline)

    def _new_job(self, kind: str) -> Job:
        with self.jobs_lock:
            job = Job(
                token=f"cm-{self.run_id}-{kind}-{len(self.jobs):04d}",
                kind="script" if kind == "probe" else kind,
                probe=kind == "probe",
            )
            self.jobs.append(job)
        return job

    def _start_pipeline(self, client: _Client, deadline: float) -> None:
        job = self._new_job("pipeline")
        job.submitted_at = time.monotonic()
        r = client.call("POST", f"/pipelines/{self.pipeline_name}/start", deadline)
        if r.status_code != 200:
            raise RuntimeError(f"pipeline start: HTTP {r.status_code}: {r.text[:300]}")
        job.job_id = r.json()["job_id"]

    def _submit_workload(self, client: _Client, interval_s: float, deadline: float) -> None:
        if self.with_pipeline:
            try:
                self._start_pipeline(client, deadline)
            except Exception as e:
                self.errors.append(f"pipeline: {e}")
        kinds = ["script"] * self.n_jobs
        # Agent and phased jobs alternate (each kind through the whole span of the kills).
        others = [
            k
            for i in range(max(self.n_agents, self.n_phased))
            for k, n in (("agent", self.n_agents), ("phased", self.n_phased))
            if i < n
        ]
        # The other kinds spread evenly over the first 80% of the workload: they take longer
        # than a script, and should run while the kills go on.
        for i, kind in enumerate(others):
            at = round(0.8 * (i + 0.5) * (len(kinds) + len(others)) / len(others))
            kinds.insert(min(at, len(kinds)), kind)
        for kind in kinds:
            job = self._new_job(kind)
            job.submitted_at = time.monotonic()
            try:
                job.job_id = self._submit(client, job, deadline)
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
                probe.job_id = self._submit(client, probe, deadline)
                probe.result = client.result(probe.job_id, deadline)
                kill.recovered_at = time.monotonic()
            except Exception as e:
                self.errors.append(f"probe after {part} kill: {e}")
            self.log(
                f"  killed {part:<10} recovered in "
                + (f"{kill.recovery_s:.1f} s" if kill.recovery_s is not None else "—")
            )

    def _finish_pipeline(self, client: _Client, deadline: float) -> None:
        """After the kills: the pipeline runs with exactly one live process per service (by
        its marker); stopped, it ends `stopped` with none left."""
        job = next(j for j in self.jobs if j.kind == "pipeline")
        if job.job_id is None:
            return
        path = f"/pipelines/{self.pipeline_name}"
        phase, until = "", min(deadline, time.monotonic() + 60)
        while time.monotonic() < until:
            r = client.call("GET", path, deadline)
            phase = r.json().get("phase", "") if r.status_code == 200 else f"HTTP {r.status_code}"
            if phase not in ("starting", "restarting"):
                break
            time.sleep(0.3)
        notes = self.pipeline_notes
        ok = phase == "running"
        notes.append(f"after the kills: {phase}")
        live = Counter(
            marker.split("=", 1)[1].split("/")[1]
            for _, marker in marked_by_prefix(f"{self.pipeline_name}/")
        )
        notes.append(
            "live processes by marker before stop: "
            + ", ".join(f"{s} {live.get(s, 0)}" for s in PIPELINE_SERVICES)
        )
        ok = (
            ok
            and all(live.get(s, 0) == 1 for s in PIPELINE_SERVICES)
            and len(live) == len(PIPELINE_SERVICES)
        )
        starts = self._service_starts()
        notes.append(
            "service starts (their logs): " + ", ".join(f"{s} {n}" for s, n in starts.items())
        )
        r = client.call("POST", f"{path}/stop", deadline, params={"wait": 60})
        stopped = r.json().get("phase") if r.status_code == 200 else f"HTTP {r.status_code}"
        job.result = client.result(job.job_id, deadline)
        left = marked_by_prefix(f"{self.pipeline_name}/")
        notes.append(f"stop: {stopped}; live processes after stop: {len(left)}")
        self.pipeline_ok = ok and stopped == "stopped" and not left

    def _service_starts(self) -> dict[str, int]:
        runtime = self.root / "data" / "pipelines" / self.pipeline_name
        starts = {}
        for name in PIPELINE_SERVICES:
            log = runtime / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            starts[name] = sum(1 for ln in text.splitlines() if ln.startswith("started "))
        return starts

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Report:
        t0 = time.monotonic()
        deadline = t0 + self.deadline_s
        self._start()
        try:
            submitter = _Client(self.stack.url, self.stats)
            killer = _Client(self.stack.url, self.stats)
            # Spread the workload over about as long as the kills take (~7 s a kill here).
            n = self.n_jobs + self.n_agents + self.n_phased
            interval = 7.0 * self.kills_per_part * len(PARTS) / max(n, 1)
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
                if job.job_id and job.result is None and job.kind != "pipeline":
                    try:
                        job.result = submitter.result(job.job_id, deadline)
                    except Exception as e:
                        self.errors.append(f"{job.token}: {e}")
            if self.with_pipeline:
                try:
                    self._finish_pipeline(submitter, deadline)
                except Exception as e:
                    self.errors.append(f"pipeline: {e}")
            submitter.close()
            killer.close()
            view, outcome_available = asyncio.run(self._temporal_view())
        finally:
            self._stop()
        return self._report(view, outcome_available, time.monotonic() - t0)

    async def _temporal_view(self) -> tuple[dict[str, _Seen], bool]:
        """job id -> what Temporal records of it (_Seen); and whether the server has the
        ShopfloorOutcome search attribute at all."""
        client = await Client.connect(self.server.address)
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        available = OUTCOME_ATTRIBUTE in listed.custom_attributes
        view: dict[str, _Seen] = {}
        for job in self.jobs:
            if not job.job_id:
                continue
            runs = [w async for w in client.list_workflows(f'WorkflowId = "{job.job_id}"')]
            results = sum(1 for w in runs if w.status != WorkflowExecutionStatus.CONTINUED_AS_NEW)
            handle = client.get_workflow_handle(job.job_id)
            done = 0
            if job.kind == "script":  # a script job's activities are its script's runs
                history = await handle.fetch_history()
                done = sum(1 for _, completed in runs_in_history(history.events) if completed)
            outcome = None
            if available:
                desc = await handle.describe()
                outcome = desc.typed_search_attributes.get(OUTCOME_KEY)
            starts = [w.start_time.timestamp() for w in runs if w.start_time]
            ends = [w.close_time.timestamp() for w in runs if w.close_time]
            span = (min(starts), max(ends)) if starts and ends else None
            view[job.job_id] = _Seen(results, done, outcome, span)
        return view, available

    def _ok(self, job: Job, hits: Counter) -> bool:
        """The job's result is the one it should have, and its side effects happened."""
        answer = job.result or {}
        res = answer.get("result") or {}
        if answer.get("status") != "COMPLETED":
            return False
        if job.kind == "script":
            return res.get("exit_code") == 0 and f"done {job.token}" in res.get("stdout_tail", "")
        if job.kind == "agent":
            steps = [s.get("id") for s in res.get("steps", [])]
            return (
                res.get("status") == "COMPLETED"
                and res.get("goalId") == job.token
                and steps == AGENT_STEPS
            )
        if job.kind == "phased":
            return (
                res.get("status") == "COMPLETED"
                and all(s.get("status") == "COMPLETED" for s in res.get("steps", []))
                and all(hits[f"{job.token}/{s}"] >= 1 for s in PHASED_HITS)
            )
        return res.get("phase") == "stopped" and self.pipeline_ok  # the pipeline

    def _report(self, view: dict[str, _Seen], outcome_available: bool, wall_s: float) -> Report:
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
        hits = self.hits.counts
        rows = {k: KindRow(kind=k) for k in KINDS}
        rows["script"].extra_side_effects = sum(max(0, n - 1) for n in ran.values())
        if self.n_phased:
            rows["phased"].extra_side_effects = sum(max(0, n - 1) for n in hits.values())
        if self.with_pipeline:
            starts = self._service_starts()
            rows["pipeline"].extra_side_effects = sum(max(0, n - 1) for n in starts.values())
            rows["pipeline"].notes = self.pipeline_notes
        completed, lost, duplicates = 0, [], []
        for job in self.jobs:
            row = rows[job.kind]
            row.jobs += 1
            ok = self._ok(job, hits)
            if ok:
                completed += 1
                row.completed += 1
            else:
                lost.append(job.token)
                row.lost.append(job.token)
            seen = view.get(job.job_id or "", _Seen())
            results, done, outcome = seen.results, seen.script_runs, seen.outcome
            if seen.span is not None:
                first, last = seen.span
                row.spans.append(seen.span)
                row.kills_during.update(k.part for k in self.kills if first <= k.wall_at <= last)
            if results > 1 or done > 1:
                dup = f"{job.token}: {results} workflow runs, {done} completed script runs"
                duplicates.append(dup)
                row.duplicate_results.append(dup)
            if outcome_available:
                row.outcomes[outcome or "none"] += 1
                if outcome != "passed":
                    row.wrong_outcome.append(f"{job.token}: {OUTCOME_ATTRIBUTE}={outcome}")
            if job.kind == "script" and ok and ran[job.token] == 0:
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
            side_effects=Counter({j.token: ran[j.token] for j in self.jobs if j.kind == "script"}),
            reruns_after=reruns_after,
            statuses=self.stats.statuses,
            unavailable_at=self.stats.unavailable_at,
            connection_errors=self.stats.connection_errors,
            kills=self.kills,
            errors=self.errors + self.stats.samples,
            kinds=rows,
            outcome_available=outcome_available,
        )


def effects_root() -> Path:
    """A fresh directory for the effects file, under the repo's git-ignored `.shopfloor/`."""
    base = REPO / ".shopfloor" / "crash-matrix"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="effects-", dir=base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100, help="script jobs")
    ap.add_argument("--agents", type=int, default=10, help="agent jobs (mock-agent goals)")
    ap.add_argument("--phased", type=int, default=10, help="phased jobs (delays, http steps)")
    ap.add_argument(
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run a pipeline through the kills",
    )
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
            agents=args.agents,
            phased=args.phased,
            pipeline=args.pipeline,
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
        or (report.outcome_available and report.wrong_outcomes)
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
