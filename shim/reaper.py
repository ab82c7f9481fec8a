"""The one owner of waitpid(-1) in a shim process.

The shim is a child subreaper: containers' processes are re-parented to it when runc exits, and
runc invocations are its own children. One thread reaps them all: the shim's main thread waits for
SIGCHLD (blocked in every thread, taken with sigwait) and calls reap(), which hands each exit to
the ExitWatch of its pid; whoever waits for that pid blocks on the watch in a thread of its own.
Children are started through spawn(), which registers the watch under the reaper's lock before a
reap can look for it, so no exit is ever missed; an exit nobody waits for yet (a container process
that dies before its pid is read from runc's pid file) is kept until it is claimed.
"""

from __future__ import annotations

import collections
import os
import threading
import time

from pyrunc.shim.spawn import exit_status, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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


# Exits reaped before anyone asked for them; bounded, oldest dropped first.
UNCLAIMED_LIMIT = 1024


class Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, list[ExitWatch]] = {}
        self._unclaimed: collections.OrderedDict[int, Exit] = collections.OrderedDict()

    def install(self, *, subreaper: bool = True) -> None:
        """Become a child subreaper (when asked). The caller then calls reap() on every
        SIGCHLD, from one thread, and once now for anything that exited before."""
        if subreaper:
            import prctl

            prctl.set_child_subreaper(1)

    def reap(self) -> None:
        """Collect every child that has exited and deliver its exit."""
        while True:
            with self._lock:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                exit = Exit(pid, exit_status(status), time.time_ns())
                watches = self._waiters.pop(pid, None)
                if not watches:
                    self._unclaimed[pid] = exit
                    while len(self._unclaimed) > UNCLAIMED_LIMIT:
                        self._unclaimed.popitem(last=False)
                    continue
            for watch in watches:  # outside the lock: a woken waiter may spawn at once
                watch.set(exit)

    def watch(self, pid: int, since_ns: int = 0) -> ExitWatch:
        with self._lock:
            return self._watch(pid, since_ns)

    def _watch(self, pid: int, since_ns: int) -> ExitWatch:
        watch = ExitWatch(pid)
        early = self._unclaimed.pop(pid, None)
        if early is not None and early.timestamp_ns >= since_ns:
            watch.set(early)
        else:
            self._waiters.setdefault(pid, []).append(watch)
        return watch

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        extra_fds: Sequence[int] = (),
        setsid: bool = False,
    ) -> tuple[int, ExitWatch]:
        # Under the lock: the child cannot be reaped before its watch is registered.
        with self._lock:
            pid = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                        extra_fds=extra_fds, setsid=setsid)
            return pid, self._watch(pid, 0)
