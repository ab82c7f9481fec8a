"""The one owner of waitpid(-1) in a shim process.

The shim is a child subreaper: containers' processes are re-parented to it when runc exits, and
runc invocations are its own children. Exactly one loop reaps them all (on SIGCHLD) and hands each
exit to whoever waits for that pid. Children are started with posix_spawn and registered before
the loop can run again, so no exit is ever missed; an exit nobody waits for yet (a container
process that dies before its pid is read from runc's pid file) is kept until it is claimed.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Mapping, Sequence

from pyrunc.oci.monitor import Exit
from pyrunc.shim.spawn import exit_status, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio



# Exits reaped before anyone asked for them; bounded, oldest dropped first.
UNCLAIMED_LIMIT = 1024


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
