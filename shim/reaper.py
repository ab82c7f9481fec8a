"""The one owner of waitpid(-1) in a shim process.

The shim is a child subreaper: containers' processes are re-parented to it when runc exits, and
runc invocations are its own children. Exactly one loop reaps them all (on SIGCHLD) and hands each
exit to whoever waits for that pid. Children are started with posix_spawn and registered before
the loop can run again, so no exit is ever missed; an exit nobody waits for yet (a container
process that dies before its pid is read from runc's pid file) is kept until it is claimed.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence

from pyrunc.oci.monitor import Exit

log = logging.getLogger("pyrunc.reaper")

# Exits reaped before anyone asked for them; bounded, oldest dropped first.
UNCLAIMED_LIMIT = 1024


def exit_status(wait_status: int) -> int:
    """As a shell reports it: the exit code, or 128 + the signal that killed the process."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: dict[int, list[asyncio.Future[Exit]]] = {}
        self._unclaimed: collections.OrderedDict[int, Exit] = collections.OrderedDict()

    def install(self, *, subreaper: bool = True) -> None:
        """Become a child subreaper (when asked) and reap on every SIGCHLD."""
        if subreaper:
            import prctl

            prctl.set_child_subreaper(1)
        self.loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # anything that exited before the handler was in place

    def uninstall(self) -> None:
        self.loop.remove_signal_handler(signal.SIGCHLD)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._deliver(Exit(pid, exit_status(status), time.time_ns()))

    def _deliver(self, exit: Exit) -> None:
        waiters = self._waiters.pop(exit.pid, None)
        if not waiters:
            self._unclaimed[exit.pid] = exit
            while len(self._unclaimed) > UNCLAIMED_LIMIT:
                self._unclaimed.popitem(last=False)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(exit)

    def watch(self, pid: int, since_ns: int = 0) -> asyncio.Future[Exit]:
        fut: asyncio.Future[Exit] = self.loop.create_future()
        early = self._unclaimed.pop(pid, None)
        if early is not None and early.timestamp_ns >= since_ns:
            fut.set_result(early)
        else:
            self._waiters.setdefault(pid, []).append(fut)
        return fut

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
    ) -> tuple[int, asyncio.Future[Exit]]:
        pid = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                    extra_fds=extra_fds, setsid=setsid)
        # Registered before control returns to the loop: the SIGCHLD handler cannot run first.
        return pid, self.watch(pid)


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_fds: Sequence[int] = (),
    setsid: bool = False,
) -> int:
    """posix_spawn with fds 0-2 from the arguments (None: /dev/null) and extra_fds as 3, 4, ….

    Every other fd stays behind: Python opens them close-on-exec. The child starts with default
    signal dispositions and an empty signal mask, whatever the shim set for itself.
    """
    wanted: list[tuple[int, int | None]] = [(0, stdin), (1, stdout), (2, stderr)]
    wanted += [(3 + i, fd) for i, fd in enumerate(extra_fds)]
    # Copy every source above all targets first, so that one dup2 never overwrites a source
    # that another still has to copy from.
    floor = len(wanted) + 10
    dups: list[int] = []
    actions: list[tuple[int, int, int] | tuple[int, int, str, int, int]] = []
    try:
        for target, fd in wanted:
            if fd is None:
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
            else:
                dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
                dups.append(dup)
                actions.append((os.POSIX_SPAWN_DUP2, dup, target))
        return os.posix_spawnp(
            argv[0],
            list(argv),
            dict(os.environ if env is None else env),
            file_actions=actions,
            setsid=setsid,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )
    finally:
        for dup in dups:
            os.close(dup)


# Signals reset to their default action in children (Python ignores SIGPIPE, for one). glibc
# keeps 32 and 33 for itself, and real-time signals are never ignored by the shim.
_DEFAULT_SIGNALS = tuple(
    s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)
)
