"""The local-first hand-off and adoption as a state machine, on its own (no Temporal, no
processes): every transition the protocol has, and the ones it has not raising."""

from __future__ import annotations

import pytest

from shopfloor.usercode import Custody, Handoff, IllegalTransition

EVENTS = ("start", "hand_off", "lose", "adopt", "close")


def in_state(state: Custody, owner: int | None = 1) -> Handoff:
    return Handoff(state, owner)


def fire(handoff: Handoff, event: str) -> None:
    if event == "start":
        handoff.start(local=False)
    elif event == "adopt":
        handoff.adopt(2, local=False)
    else:
        getattr(handoff, event)()


def test_a_run_is_its_preparing_attempts_alone() -> None:
    handoff = Handoff.prepared_by(3)
    assert handoff.state is Custody.PREPARING and handoff.owned_by(3)
    assert not handoff.owned_by(4)


def test_a_short_local_run_starts_and_closes_under_its_attempt() -> None:
    handoff = Handoff.prepared_by(1)
    handoff.start(local=True)
    assert handoff.state is Custody.LOCAL and handoff.owned_by(1)
    assert handoff.close() and handoff.state is Custody.CLOSED
    assert not handoff.owned_by(1)


def test_a_long_local_run_is_handed_off_then_taken_over_by_the_activity() -> None:
    handoff = Handoff.prepared_by(1)
    handoff.start(local=True)
    handoff.hand_off()
    assert handoff.state is Custody.HANDED_OFF and handoff.owner is None
    assert not handoff.owned_by(1)  # the local attempt ended: it frees nothing
    assert handoff.adopt(1, local=False) is None  # nobody had it
    assert handoff.state is Custody.SUPERVISED and handoff.owned_by(1)


def test_the_retry_of_a_lost_workflow_task_takes_a_handed_off_run_back_locally() -> None:
    handoff = Handoff(Custody.HANDED_OFF, None)
    handoff.adopt(1, local=True)
    assert handoff.state is Custody.LOCAL and handoff.owned_by(1)
    handoff.hand_off()  # over its budget again
    assert handoff.state is Custody.HANDED_OFF


def test_a_lost_attempt_leaves_its_run_for_a_later_one() -> None:
    handoff = Handoff.prepared_by(1)
    handoff.start(local=False)
    handoff.lose()
    assert handoff.state is Custody.DETACHED and handoff.owner is None
    assert handoff.adopt(2, local=False) is None
    assert handoff.state is Custody.SUPERVISED and handoff.owned_by(2)


def test_a_later_attempt_supersedes_one_that_still_waits() -> None:
    handoff = Handoff.prepared_by(1)
    handoff.start(local=False)
    assert handoff.adopt(2, local=False) == 1
    assert handoff.owned_by(2) and not handoff.owned_by(1)


def test_a_kept_run_is_closed_unadopted_once() -> None:
    for kept in (Custody.HANDED_OFF, Custody.DETACHED):
        handoff = in_state(kept, None)
        assert handoff.close() is True  # the window ended, the job was cancelled, a stop
        assert handoff.close() is False  # freed once: a second close does nothing


# Every event from every state: allowed exactly where the protocol has it.
ALLOWED = {
    (Custody.PREPARING, "start"): Custody.SUPERVISED,
    (Custody.LOCAL, "hand_off"): Custody.HANDED_OFF,
    (Custody.LOCAL, "lose"): Custody.DETACHED,
    (Custody.SUPERVISED, "lose"): Custody.DETACHED,
    (Custody.LOCAL, "adopt"): Custody.SUPERVISED,
    (Custody.SUPERVISED, "adopt"): Custody.SUPERVISED,
    (Custody.HANDED_OFF, "adopt"): Custody.SUPERVISED,
    (Custody.DETACHED, "adopt"): Custody.SUPERVISED,
    **{(state, "close"): Custody.CLOSED for state in Custody},
}


@pytest.mark.parametrize("state", list(Custody), ids=lambda s: s.name)
@pytest.mark.parametrize("event", EVENTS)
def test_every_transition_is_the_protocols_or_raises(state: Custody, event: str) -> None:
    handoff = in_state(state)
    target = ALLOWED.get((state, event))
    if target is None:
        with pytest.raises(IllegalTransition, match=f"{event} from {state.name}"):
            fire(handoff, event)
        assert handoff.state is state  # an illegal transition changes nothing
    else:
        fire(handoff, event)
        assert handoff.state is target


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (Custody.PREPARING, "hand_off"),  # nothing runs yet
        (Custody.SUPERVISED, "hand_off"),  # only a local attempt hands off
        (Custody.HANDED_OFF, "lose"),  # no attempt had it to lose
        (Custody.DETACHED, "start"),  # started once, never again
        (Custody.CLOSED, "adopt"),  # freed: nothing to take over
        (Custody.PREPARING, "adopt"),  # not kept anywhere a later attempt looks
    ],
)
def test_the_transitions_a_bug_would_make_raise(state: Custody, event: str) -> None:
    with pytest.raises(IllegalTransition):
        fire(in_state(state), event)
