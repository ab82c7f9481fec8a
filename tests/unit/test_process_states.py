"""The process state machine: what each state allows, and the words of a refusal."""

from __future__ import annotations

import threading

import pytest

from pyrunc.oci.process import ALLOWED, TRANSITIONS, Op, Process, State, StateError
from pyrunc.oci.stdio import Stdio


def new_process() -> Process:
    return Process(id="c1", stdio=Stdio())


def test_a_running_process_cannot_be_deleted() -> None:
    p = new_process()
    p.transition(State.RUNNING)
    with pytest.raises(StateError, match="cannot delete a running process"):
        p.check(Op.DELETE)


def test_a_stopped_process_cannot_start_again() -> None:
    p = new_process()
    p.transition(State.RUNNING)
    p.set_exited(0)
    with pytest.raises(StateError, match="cannot start a stopped process"):
        p.check(Op.START)


@pytest.mark.parametrize("state", list(State))
def test_every_refusal_names_the_operation(state: State) -> None:
    for op in Op:
        if op in ALLOWED[state]:
            continue
        message = str(StateError(state, op))
        assert message.startswith("cannot") or message == "process already deleted"


def test_exit_moves_created_and_running_to_stopped_once() -> None:
    for start in (State.CREATED, State.RUNNING):
        p = new_process()
        if start is State.RUNNING:
            p.transition(State.RUNNING)
        p.set_exited(3, 1_000_000_123)
        p.set_exited(9, 2_000_000_000)  # a second report of the same exit changes nothing
        assert (p.state, p.exit_status, p.exited_at_ns) == (State.STOPPED, 3, 1_000_000_123)


def test_exit_after_delete_keeps_deleted() -> None:
    p = new_process()
    p.transition(State.DELETED)
    p.set_exited(137)
    assert p.state is State.DELETED and p.has_exited


def test_invalid_transition_is_a_bug_not_a_refusal() -> None:
    p = new_process()
    p.transition(State.RUNNING)
    p.transition(State.STOPPED)
    with pytest.raises(RuntimeError, match="invalid state transition"):
        p.transition(State.RUNNING)


def test_transitions_only_lead_to_states_that_exist_and_deleted_is_final() -> None:
    assert TRANSITIONS[State.DELETED] == frozenset()
    assert ALLOWED[State.DELETED] == frozenset()


def test_wait_returns_once_exited() -> None:
    p = new_process()
    assert p.wait(0.01) is False
    waiter = threading.Thread(target=p.wait)
    waiter.start()
    p.set_exited(5)
    waiter.join(1)
    assert not waiter.is_alive()
    assert p.wait(0) is True and p.exit_status == 5
