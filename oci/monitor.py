"""How oci/ starts child processes and learns of their exits, without owning waitpid.

A shim must have exactly one waiter for its children (containers are re-parented to it, and runc
invocations are its children too), so oci/ never calls waitpid itself: everything it starts goes
through a ProcessMonitor handed in by the caller. pyrunc.shim.reaper provides the real one, whose
reaping thread delivers each exit to the ExitWatch of its pid; any other thread may block on it.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Protocol
else:
    Protocol = object


class Exit:
    """A reaped child: its pid, its exit status as a shell reports it, and when it was reaped."""

    __slots__ = ("pid", "status", "timestamp_ns")

    def __init__(self, pid: int, status: int, timestamp_ns: int) -> None:
        self.pid = pid
        self.status = status  # the exit code, or 128 + signal number when killed by a signal
        self.timestamp_ns = timestamp_ns  # wall clock (time.time_ns) at reaping

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Exit) and (self.pid, self.status, self.timestamp_ns) == (
            other.pid, other.status, other.timestamp_ns)

    def __hash__(self) -> int:
        return hash((self.pid, self.status, self.timestamp_ns))

    def __repr__(self) -> str:
        return f"Exit(pid={self.pid}, status={self.status}, timestamp_ns={self.timestamp_ns})"


class ExitWatch:
    """The exit of one process, set once by the reaper; any number of threads may wait for it."""

    __slots__ = ("_done", "_exit", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exit: Exit | None = None
        self._done = threading.Event()

    def set(self, exit: Exit) -> None:
        """Deliver the exit (the reaper's call); a second delivery changes nothing."""
        if self._exit is None:
            self._exit = exit
            self._done.set()

    def done(self) -> bool:
        return self._exit is not None

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block until the exit is known (at most `timeout` seconds); None on timeout."""
        if self._exit is None:
            self._done.wait(timeout)
        return self._exit

    def result(self) -> Exit:
        """The exit, blocking for as long as it takes."""
        exit = self.wait()
        assert exit is not None
        return exit


class ProcessMonitor(Protocol):
    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        extra_fds: Sequence[int] = (),
    ) -> tuple[int, ExitWatch]:
        """Start argv with the given fds as 0/1/2 (None: /dev/null) and extra_fds as 3, 4, ….

        The returned watch is registered before this call returns, so no exit can be missed.
        A program that cannot be started raises OSError, as posix_spawn does (oci/errors.py
        words it as Go would, either way).
        """
        ...

    def watch(self, pid: int, since_ns: int = 0) -> ExitWatch:
        """The exit of pid, which is not our own spawn (a re-parented process).

        An exit reaped before the call is delivered too, unless it was reaped before since_ns
        (a stale exit of an earlier process that had the same pid).
        """
        ...
