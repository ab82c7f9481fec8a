"""How oci/ starts child processes and learns of their exits, without owning waitpid.

A shim must have exactly one waiter for its children (containers are re-parented to it, and runc
invocations are its children too), so oci/ never calls waitpid itself: everything it starts goes
through a ProcessMonitor handed in by the caller. pyrunc.shim.reaper provides the real one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio


@dataclass(frozen=True)
class Exit:
    """A reaped child: its pid, its exit status as a shell reports it, and when it was reaped."""

    pid: int
    status: int  # the exit code, or 128 + signal number when killed by a signal
    timestamp_ns: int  # wall clock (time.time_ns) at reaping


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
    ) -> tuple[int, asyncio.Future[Exit]]:
        """Start argv with the given fds as 0/1/2 (None: /dev/null) and extra_fds as 3, 4, ….

        The returned future resolves when the child has been reaped; it is registered before
        this call returns, so no exit can be missed. A program that cannot be started raises
        OSError, as posix_spawn does (oci/errors.py words it as Go would, either way).
        """
        ...

    def watch(self, pid: int, since_ns: int = 0) -> asyncio.Future[Exit]:
        """A future for the exit of pid, which is not our own spawn (a re-parented process).

        An exit reaped before the call is delivered too, unless it was reaped before since_ns
        (a stale exit of an earlier process that had the same pid).
        """
        ...
