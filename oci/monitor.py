"""How oci/ starts child processes and learns of their exits, without owning waitpid, and
mounts a rootfs, without owning the mount code.

A shim must have exactly one waiter for its children (containers are re-parented to it, and runc
invocations are its children too), so oci/ never calls waitpid itself: everything it starts goes
through a ProcessMonitor handed in by the caller. These are only the interfaces oci/ relies on:
pyrunc.shim.reaper provides the real monitor and its Exit and ExitWatch, whose reaping thread
delivers each exit to the watch of its pid; any other thread may block on it. Mounting a
container's rootfs is the same for every shim, so the framework owns it too: pyrunc.shim.mount is
a RootfsMounts, handed in by the caller like the monitor.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Protocol
else:
    Protocol = object


class Exit(Protocol):
    """A reaped child: its pid, its exit status as a shell reports it (the exit code, or 128 +
    the signal that killed it), and when it was reaped (wall clock, time.time_ns)."""

    pid: int
    status: int
    timestamp_ns: int


class ExitWatch(Protocol):
    """The exit of one process, set once by the monitor; any number of threads may wait."""

    pid: int

    def done(self) -> bool:
        """Whether the exit is known."""
        ...

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block until the exit is known (at most `timeout` seconds); None on timeout."""
        ...

    def result(self) -> Exit:
        """The exit, blocking for as long as it takes."""
        ...


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


class MountSpec(Protocol):
    """One rootfs mount as containerd sends it."""

    type: str
    source: str
    options: tuple[str, ...]


class RootfsMounts(Protocol):
    """Mounting a rootfs on a target and taking it down; failures raise MountError."""

    @property
    def MountError(self) -> type[Exception]:
        """What every failure raises."""
        ...

    def check(self, m: Any) -> None:
        """Refuse (MountError) a mount that could reach outside what containerd prepared."""
        ...

    def mount_all(self, mounts: Any, target: str) -> None:
        """Mount each in order on target; on failure nothing stays mounted."""
        ...

    def unmount_all(self, path: str) -> None:
        """Unmount everything at or below path. Idempotent."""
        ...
