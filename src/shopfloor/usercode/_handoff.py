"""Who looks after a run of user code: the local-first hand-off and adoption as one state
machine (pure: no Temporal, no processes; `_run` drives it).

A run starts under the attempt that made it: a local attempt (in the workflow task's worker,
which cannot heartbeat) or an activity attempt (which heartbeats). From there:

    PREPARING --start(local)--> LOCAL --hand_off--> HANDED_OFF --adopt--> SUPERVISED
    PREPARING --start--> SUPERVISED --lose--> DETACHED --adopt--> SUPERVISED (or LOCAL)
    LOCAL --lose--> DETACHED;  LOCAL / SUPERVISED --adopt--> a later attempt supervises it
    any state --close--> CLOSED (killed if need be, and freed; closing twice does nothing)

`adopt` is how a later attempt takes the run over: the activity on this worker's hand-off
queue (from HANDED_OFF), the retry of a lost attempt (from DETACHED), or a retry that comes
while the earlier attempt still waits (from LOCAL or SUPERVISED: the earlier one is then
superseded). Anything else is a bug, and raises `IllegalTransition`.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from dataclasses import dataclass


class Custody(enum.Enum):
    PREPARING = "preparing"  # its job dir is made, its code not started: its attempt's alone
    LOCAL = "local"  # running under a local attempt, until the hand-off budget
    SUPERVISED = "supervised"  # running under an activity attempt, which heartbeats
    HANDED_OFF = "handed off"  # left by its local attempt for the activity on the hand-off queue
    DETACHED = "detached"  # its attempt was lost: kept for a later attempt to adopt
    CLOSED = "closed"  # killed (if need be) and freed


class IllegalTransition(RuntimeError):
    """A transition the hand-off protocol does not have (a bug in its caller)."""


_RUNNING = {Custody.LOCAL, Custody.SUPERVISED}
_KEPT = {Custody.HANDED_OFF, Custody.DETACHED}
# Event → the states it may leave (where it goes is the event's own, below).
_FROM: dict[str, set[Custody]] = {
    "start": {Custody.PREPARING},
    "hand_off": {Custody.LOCAL},
    "lose": _RUNNING,
    "adopt": _RUNNING | _KEPT,
    "close": set(Custody) - {Custody.CLOSED},
}


@dataclass
class Handoff:
    """The custody of one run, and the attempt that owns it (None: no attempt does, it is
    kept for one to come)."""

    state: Custody = Custody.PREPARING
    owner: int | None = None

    @classmethod
    def prepared_by(cls, attempt: int) -> Handoff:
        """The attempt that made the run's job dir owns it from the start."""
        return cls(Custody.PREPARING, attempt)

    def owned_by(self, attempt: int) -> bool:
        return self.owner == attempt and self.state in _RUNNING | {Custody.PREPARING}

    def start(self, *, local: bool) -> None:
        """Its owner starts its code."""
        self._move("start", _running(local), self.owner)

    def hand_off(self) -> None:
        """Its local attempt's budget ran out: the run goes on, for the hand-off queue."""
        self._move("hand_off", Custody.HANDED_OFF, None)

    def lose(self) -> None:
        """Temporal lost its attempt: the run goes on, for a later attempt to adopt."""
        self._move("lose", Custody.DETACHED, None)

    def adopt(self, attempt: int, *, local: bool) -> int | None:
        """`attempt` takes the run over; returns the attempt that had it (None: none had)."""
        earlier = self.owner
        self._move("adopt", _running(local), attempt)
        return earlier

    def close(self) -> bool:
        """True the first time (the caller frees the run); False once closed."""
        if self.state is Custody.CLOSED:
            return False
        self._move("close", Custody.CLOSED, None)
        return True

    def _check(self, event: str) -> None:
        if self.state not in _FROM[event]:
            raise IllegalTransition(f"{event} from {self.state.name}")

    def _move(self, event: str, to: Custody, owner: int | None) -> None:
        self._check(event)
        self.state, self.owner = to, owner


def _running(local: bool) -> Custody:
    return Custody.LOCAL if local else Custody.SUPERVISED


# -- where a hand-off goes ------------------------------------------------------------------

# Names this worker process among all workers: its hand-off queues are its alone.
_WORKER_TAG = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
# The attempt a kept run or result is held for when any later attempt may claim it: a
# handed-off run (for the activity on the hand-off queue, or a retry of its local attempt),
# and a local attempt's result (its retry, after a lost workflow task, is attempt 1 again).
ANY_ATTEMPT = 0
# What a run is kept under: workflow id, run id, and activity id (or "handoff:" + type).
ActivityKey = tuple[str, str, str]


def handoff_queue(task_queue: str) -> str:
    """The task queue beside `task_queue` that only this worker process polls: where its local
    attempts hand over the runs they leave running."""
    return f"{task_queue}@{_WORKER_TAG}"


def shared_queue(task_queue: str) -> str:
    """The queue whose hand-off queue `task_queue` is (or `task_queue` itself)."""
    return task_queue.removesuffix(f"@{_WORKER_TAG}")


def handoff_key(workflow_id: str | None, run_id: str | None, activity_type: str) -> ActivityKey:
    """Where a local attempt of a job's `activity_type` leaves its run (one per workflow run:
    the activity that takes it over has an id of its own)."""
    return (workflow_id or "", run_id or "", f"handoff:{activity_type}")
