"""A container process's stdio: pipes to runc on one side, containerd's fifos on the other.

The container writes into OS pipes that the shim owns; the shim relays them into the fifos that
containerd (or ctr) reads. Holding the pipes rather than handing runc the fifos means output is
never lost while nobody reads: a containerd restart just pauses the relay. As the Go shim does,
the shim also holds its own read end of each output fifo (so writing never fails with EPIPE while
containerd is away) and its own write end of the stdin fifo (so the container sees EOF on stdin
only when CloseIO says so, not whenever a client disconnects).

The relay moves bytes with splice(2): the kernel copies between the pipes, Python only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("pyrunc.stdio")

_CHUNK = 1 << 20
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_BURST = 16  # successful transfers before yielding to other work on the loop


@dataclass(frozen=True)
class Stdio:
    """The stdio paths containerd asked for ('' for none) and whether a terminal is wanted."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class _Waiter:
    """Await one fd becoming readable or writable on the running loop."""

    def __init__(self, fd: int, *, writable: bool) -> None:
        self.fd = fd
        self.writable = writable

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        if self.writable:
            loop.add_writer(self.fd, ready)
        else:
            loop.add_reader(self.fd, ready)
        try:
            await fut
        finally:
            if self.writable:
                loop.remove_writer(self.fd)
            else:
                loop.remove_reader(self.fd)


async def relay(src: int, dst: int) -> int:
    """Move everything from src to dst until src reaches EOF; both must be non-blocking.

    Returns the byte count. Stops early (without raising) if dst's reader is gone for good.
    """
    read_wait = _Waiter(src, writable=False)
    write_wait = _Waiter(dst, writable=True)
    use_splice = True
    total = 0
    burst = 0
    src_may_be_empty = True
    pending = b""
    while True:
        try:
            if pending:
                n = os.write(dst, pending)
                pending = pending[n:]
                total += n
                continue
            if use_splice:
                n = os.splice(src, dst, _CHUNK, flags=_SPLICE_FLAGS)
            else:
                data = os.read(src, _CHUNK)
                n = len(data)
                if n:
                    pending = data
                    continue
        except BlockingIOError:
            # Empty source or full destination; splice does not say which, so alternate.
            if src_may_be_empty and not pending:
                await read_wait.wait()
                src_may_be_empty = False
            else:
                await write_wait.wait()
                src_may_be_empty = True
            continue
        except OSError as e:
            if e.errno == errno.EINVAL and use_splice:
                use_splice = False  # not a pipe on either side (a regular file, say)
                continue
            if e.errno == errno.EPIPE:
                return total
            raise
        if n == 0:
            return total
        total += n if use_splice else 0
        src_may_be_empty = True
        burst += 1
        if burst >= _BURST:
            burst = 0
            await asyncio.sleep(0)


def _open_fifo_writer(path: str) -> tuple[int, int]:
    """Open (holding reader, writer) on an output fifo, neither blocking.

    Our own reader makes the write open succeed at once and keeps writes from failing while
    containerd's reader is away; containerd still sees EOF when our writer closes.
    """
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(reader)
        raise
    return reader, writer


def _open_output(path: str) -> tuple[int | None, int]:
    """An output target: a fifo (with a holding reader) or, for any other file, append to it."""
    with contextlib.suppress(FileNotFoundError):
        if not os.path.exists(path) or _is_fifo(path):
            return _open_fifo_writer(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    return None, fd


def _is_fifo(path: str) -> bool:
    import stat

    return stat.S_ISFIFO(os.stat(path).st_mode)


class PipeIO:
    """The pipes between one container process and the shim, and their relays.

    Life: __init__ makes the pipes; runc_stdio() is what runc gets; after runc has started the
    process, start() opens containerd's fifos, begins relaying and closes runc's ends here.
    """

    def __init__(self, stdio: Stdio, uid: int = -1, gid: int = -1) -> None:
        self.stdio = stdio
        self._runc_side: list[int | None] = [None, None, None]
        self._shim_side: list[int | None] = [None, None, None]
        self._stdin_writer: int | None = None  # our write end of the stdin fifo (CloseIO)
        self._relays: list[asyncio.Task[int]] = []
        self._outputs: list[asyncio.Task[int]] = []  # the stdout/stderr relays among them
        self._owned: set[int] = set()
        try:
            for index, path in enumerate((stdio.stdin, stdio.stdout, stdio.stderr)):
                if not path:
                    continue
                r, w = os.pipe2(os.O_CLOEXEC)
                self._owned.update((r, w))
                if index == 0:
                    self._runc_side[0], self._shim_side[0] = r, w
                else:
                    self._runc_side[index], self._shim_side[index] = w, r
                if uid >= 0 or gid >= 0:
                    os.fchown(r, uid, gid)
                    os.fchown(w, uid, gid)
        except BaseException:
            self.close()
            raise

    def runc_stdio(self) -> tuple[int | None, int | None, int | None]:
        return (self._runc_side[0], self._runc_side[1], self._runc_side[2])

    def close_runc_side(self) -> None:
        """runc (and the container) hold their ends now; ours would keep EOF from coming."""
        for i, fd in enumerate(self._runc_side):
            self._close_fd(fd)
            self._runc_side[i] = None

    def start(self) -> None:
        """Open containerd's fifos and start relaying. Raises OSError naming the fifo."""
        stdin_path, stdout_path, stderr_path = (
            self.stdio.stdin, self.stdio.stdout, self.stdio.stderr,
        )
        if stdin_path and self._shim_side[0] is not None:
            reader = _checked_open(stdin_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._owned.add(reader)
            self._stdin_writer = _checked_open(
                stdin_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
            )
            self._owned.add(self._stdin_writer)
            os.set_blocking(self._shim_side[0], False)
            self._spawn_relay(reader, self._shim_side[0], output=False)
        for index, path in ((1, stdout_path), (2, stderr_path)):
            src = self._shim_side[index]
            if not path or src is None:
                continue
            try:
                holder, writer = _open_output(path)
            except OSError as e:
                raise OSError(e.errno, f"open {path}: {e.strerror}") from e
            self._owned.add(writer)
            if holder is not None:
                self._owned.add(holder)
            os.set_blocking(src, False)
            self._spawn_relay(src, writer, output=True)

    def _spawn_relay(self, src: int, dst: int, *, output: bool) -> None:
        async def run() -> int:
            try:
                n = await relay(src, dst)
                log.debug("relay %d -> %d done after %d bytes", src, dst, n)
                return n
            finally:
                self._close_fd(dst)  # EOF for whoever reads dst (containerd, or the container)

        task = asyncio.get_running_loop().create_task(run())
        self._relays.append(task)
        if output:
            self._outputs.append(task)

    def _close_fd(self, fd: int | None) -> None:
        """Close fd if this PipeIO still owns it; every close goes through here, once."""
        if fd is not None and fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)

    def close_stdin(self) -> None:
        """CloseIO: drop our writer of the stdin fifo, so the container gets EOF once the
        client's writer is gone too."""
        self._close_fd(self._stdin_writer)
        self._stdin_writer = None

    async def wait(self, timeout: float) -> None:
        """Wait (bounded) for stdout and stderr to drain after the process exited. (stdin ends
        only with CloseIO, so it is not waited for.)"""
        if self._outputs:
            await asyncio.wait(self._outputs, timeout=timeout)

    async def aclose(self) -> None:
        """Stop relaying and close every fd. Relays end before their fds are closed, so no
        fd number is closed twice or unregistered from the loop after being reused."""
        for task in self._relays:
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
        self._relays.clear()
        self._outputs.clear()
        self.close()

    def close(self) -> None:
        """Close every fd still owned; only for when no relay runs (set-up failures, aclose)."""
        for fd in list(self._owned):
            self._close_fd(fd)
        self._stdin_writer = None


def _checked_open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags)
    except OSError as e:
        raise OSError(e.errno, f"open {path}: {e.strerror}") from e
