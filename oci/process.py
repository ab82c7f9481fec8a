"""Container processes and their lifecycle: one explicit state machine, checked in one place.

Every operation on a process is first checked against TRANSITIONS / REFUSALS: an operation that
the current state does not allow raises StateError with the same words the Go shim uses ("cannot
start a running process"), and the caller maps it to FailedPrecondition.
"""

from __future__ import annotations

import enum
import threading
import time

from pyrunc.oci.errors import quote
from pyrunc.oci.stdio import Stdio

UNSET_EXIT_TIME_NS = -62135596800 * 1_000_000_000  # Go's zero time.Time, what "not exited" reads as


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


class Op(enum.Enum):
    START = "start"
    DELETE = "delete"
    KILL = "kill"
    EXEC = "exec"
    PAUSE = "pause"
    RESUME = "resume"
    UPDATE = "update"
    CHECKPOINT = "checkpoint"
    CLOSE_IO = "close stdin of"


# Which operations each state allows; anything else is refused with REFUSALS' words.
ALLOWED: dict[State, frozenset[Op]] = {
    State.CREATED: frozenset({Op.START, Op.DELETE, Op.KILL, Op.EXEC, Op.UPDATE, Op.CLOSE_IO}),
    State.RUNNING: frozenset(
        {Op.KILL, Op.EXEC, Op.PAUSE, Op.UPDATE, Op.CHECKPOINT, Op.CLOSE_IO}
    ),
    State.PAUSED: frozenset({Op.KILL, Op.RESUME, Op.UPDATE, Op.CHECKPOINT, Op.CLOSE_IO}),
    State.STOPPED: frozenset({Op.DELETE, Op.KILL, Op.CLOSE_IO}),
    State.DELETED: frozenset(),
}

# The state each transition leads to.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CREATED: frozenset({State.RUNNING, State.STOPPED, State.DELETED}),
    State.RUNNING: frozenset({State.STOPPED, State.PAUSED}),
    State.PAUSED: frozenset({State.RUNNING, State.STOPPED}),
    State.STOPPED: frozenset({State.DELETED}),
    State.DELETED: frozenset(),
}

REFUSALS: dict[tuple[State, Op], str] = {
    (State.CREATED, Op.PAUSE): "cannot pause task in created state",
    (State.CREATED, Op.RESUME): "cannot resume task in created state",
    (State.CREATED, Op.CHECKPOINT): "cannot checkpoint a task in created state",
    (State.RUNNING, Op.START): "cannot start a running process",
    (State.RUNNING, Op.DELETE): "cannot delete a running process",
    (State.RUNNING, Op.RESUME): "cannot resume a running process",
    (State.PAUSED, Op.START): "cannot start a paused process",
    (State.PAUSED, Op.DELETE): "cannot delete a paused process",
    (State.PAUSED, Op.PAUSE): "cannot pause a paused container",
    (State.PAUSED, Op.EXEC): "cannot exec in a paused state",
    (State.STOPPED, Op.START): "cannot start a stopped process",
    (State.STOPPED, Op.PAUSE): "cannot pause a stopped container",
    (State.STOPPED, Op.RESUME): "cannot resume a stopped container",
    (State.STOPPED, Op.UPDATE): "cannot update a stopped container",
    (State.STOPPED, Op.CHECKPOINT): "cannot checkpoint a stopped container",
    (State.STOPPED, Op.EXEC): "cannot exec in a stopped state",
}


class StateError(Exception):
    """An operation the process's state does not allow."""

    def __init__(self, state: State, op: Op) -> None:
        self.state = state
        self.op = op
        message = REFUSALS.get((state, op)) or (
            "process already deleted" if state is State.DELETED
            else f"cannot {op.value} a process in {state.value} state"
        )
        super().__init__(message)


class Process:
    """What every container process has: identity, stdio, a state and, at the end, an exit."""

    def __init__(self, id: str, stdio: Stdio, *, exec_id: str = "") -> None:
        self.id = id  # the container id for init, the exec id otherwise
        self.stdio = stdio
        self.exec_id = exec_id  # empty for a container's init process
        self.pid = 0
        self.state = State.CREATED
        self.exit_status = 0
        self.exited_at_ns = UNSET_EXIT_TIME_NS
        # Held from starting the process until its start event is queued; the exit handler
        # takes it too, so a process's exit is never published ahead of its start.
        self.lifecycle = threading.Lock()
        self._exited = threading.Event()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(id={self.id!r}, pid={self.pid}, "
                f"state={self.state.value}, exit_status={self.exit_status})")

    def check(self, op: Op) -> None:
        if op not in ALLOWED[self.state]:
            raise StateError(self.state, op)

    def transition(self, to: State) -> None:
        if to not in TRANSITIONS[self.state]:
            raise RuntimeError(
                f"invalid state transition {quote(self.state.value)} to {quote(to.value)}")
        self.state = to

    def set_exited(self, status: int, timestamp_ns: int | None = None) -> None:
        """Record the exit once; later calls (a second reaping source) change nothing."""
        if self._exited.is_set():
            return
        self.exit_status = status
        self.exited_at_ns = time.time_ns() if timestamp_ns is None else timestamp_ns
        if self.state in (State.CREATED, State.RUNNING, State.PAUSED):
            self.transition(State.STOPPED)
        self._exited.set()

    @property
    def has_exited(self) -> bool:
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the exit is recorded (at most timeout seconds); whether it is."""
        return self._exited.wait(timeout)
