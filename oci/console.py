"""A container process's terminal: the pty master from runc, relayed to containerd's fifos.

With terminal=true runc makes the pty itself and hands the master over a unix socket (`runc
create|exec --console-socket PATH`, go-runc's NewTempConsoleSocket and ReceiveMaster). The shim
then relays, as the Go shim's linuxPlatform.CopyConsole does: the stdin fifo into the master, the
master into the stdout fifo. There is no stderr: the process writes it to the same tty.

Differences from PipeIO that matter:
- splice(2) does not work on a tty, so both directions use read/write, waiting for room in the
  stdout fifo before reading more from the master: a slow reader slows the process, no output
  is dropped.
- Reading the master fails with EIO once every slave fd is closed (the process and whatever
  inherited its tty are gone): that is the end of the output.
- When stdin reaches EOF (CloseIO, and the client's writer gone), the Go shim releases the
  console: it drains what is readable, stops the output relay and closes the master, which
  hangs up the tty (SIGHUP to its session). ConsoleIO does the same.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from pyrunc.oci.errors import MessageError, PathError, describe, quote
from pyrunc.oci.stdio import (
    FILE,
    FdWaiter,
    Stdio,
    fifo_path,
    open_log_file,
    open_output,
    open_stdin_fifo,
    parse_stdout_uri,
    relay,
)

log = logging.getLogger("pyrunc.console")

_CHUNK = 64 << 10
_BURST = 16  # reads before yielding to other work on the loop
# EIO on the master says every slave fd is closed, but not always that the output has all been
# read: the kernel can answer EIO while the last writes are still on their way from the slave's
# buffer to the master's (seen here: up to 11 KiB more came after the first EIO). The Go shim
# takes EIO as "the other end went away, maybe for now" and reads on until the console is shut
# down. Here the output ends once EIO has held for this long with nothing more to read.
_EIO_QUIET = 0.05
_MAX_NAME = 4096  # runc sends the pty's name with the fd (libcontainer/utils MaxNameLen)
_SOCKET_NAME = "pty.sock"


def _private_dir(parent: str, prefix: str) -> str:
    """A new directory only its owner can enter (tempfile.mkdtemp would do, but importing
    tempfile loads shutil, bz2 and lzma into every shim: about 1.3 MiB)."""
    for _ in range(100):
        path = os.path.join(parent, f"{prefix}{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, f"no unused directory name under {parent}")


class ConsoleSocket:
    """A listening socket for `--console-socket`, in a private directory (0700) under /tmp.

    The directory keeps the path short (sun_path holds 108 bytes) and out of reach of other
    users. close() removes both.
    """

    def __init__(self) -> None:
        self._dir = _private_dir("/tmp", "pyrunc-pty")
        self.path = os.path.join(self._dir, _SOCKET_NAME)
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(self.path)
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    async def receive_master(self, timeout: float) -> int:
        """Accept runc's connection and return the pty master it sends (SCM_RIGHTS).

        The fd is the caller's, non-blocking and close-on-exec. Raises TimeoutError after
        timeout seconds, ConnectionError if runc hangs up without sending one fd.
        """
        if self._sock is None:
            raise ValueError("console socket is closed")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            conn, _ = await loop.sock_accept(self._sock)
            with conn:
                return await _receive_fd(conn)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self._dir)

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _receive_fd(conn: socket.socket) -> int:
    """Read runc's message (the pty's name, with the master attached) until the fd comes."""
    conn.setblocking(False)
    waiter = FdWaiter(conn.fileno(), writable=False)
    int_size = array.array("i").itemsize
    ancillary = socket.CMSG_SPACE(4 * int_size)  # room to notice a sender passing too many
    while True:
        try:
            data, ancdata, flags, _ = conn.recvmsg(_MAX_NAME, ancillary, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            await waiter.wait()
            continue
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % int_size])
        if len(fds) == 1 and not flags & socket.MSG_CTRUNC:
            master = fds[0]
            os.set_blocking(master, False)
            os.set_inheritable(master, False)
            log.debug("received console %r as fd %d", data.decode(errors="replace"), master)
            return master
        for fd in fds:
            os.close(fd)
        if fds or flags & socket.MSG_CTRUNC:
            raise ConnectionError(f"console socket: expected one fd, got {len(fds)}")
        if not data:
            raise ConnectionError("console socket closed without receiving a terminal")


def resize(master_fd: int, width: int, height: int) -> None:
    """Set the terminal's size (ResizePty); the kernel tells the process with SIGWINCH."""
    winsize = struct.pack("HHHH", height, width, 0, 0)  # struct winsize: rows, cols, x, y
    fcntl.ioctl(master_fd, termios.TIOCSWINSZ, winsize)


class ConsoleIO:
    """The relays between one process's pty master and containerd's stdin and stdout fifos.

    Life: construct with the Stdio (checks the stdout URI); start(master) once runc has sent the
    master; resize() for ResizePty; close_stdin() for CloseIO; wait() for the output to drain
    after the process exited; aclose() at the end. A fifo or file:// stdout is supported; a
    logging binary is not.
    """

    def __init__(self, stdio: Stdio) -> None:
        self.stdio = stdio
        try:
            self.uri = parse_stdout_uri(stdio.stdout)
        except ValueError as e:
            raise MessageError(errno.EINVAL, str(e)) from e
        if self.uri.is_binary:
            raise MessageError(
                errno.EINVAL,
                f"{quote(stdio.stdout)}: a logging binary is not supported with a terminal",
            )
        self._master: int | None = None
        self._stdin_writer: int | None = None  # our write end of the stdin fifo (CloseIO)
        self._owned: set[int] = set()
        self._relays: list[asyncio.Task[int]] = []
        self._output: asyncio.Task[int] | None = None
        self._running = 0  # relays still using the master; the last one out closes it
        self._hangup = False  # stdin ended: the output relay stops once the master is empty
        self._output_wake: asyncio.Future[None] | None = None

    def start(self, master_fd: int) -> None:
        """Take ownership of the master (also if this raises), open containerd's fifos and
        start relaying. Raises OSError naming the path."""
        self._master = master_fd
        self._owned.add(master_fd)
        os.set_blocking(master_fd, False)
        os.set_inheritable(master_fd, False)
        stdin_reader: int | None = None
        stdin_path = fifo_path(self.stdio.stdin)
        if stdin_path:
            stdin_reader, self._stdin_writer = open_stdin_fifo(stdin_path)
            self._owned.update((stdin_reader, self._stdin_writer))
        holder, writer = self._open_stdout()
        self._owned.add(writer)
        if holder is not None:
            self._owned.add(holder)
        self._output = self._spawn(self._copy_out(master_fd, writer, holder))
        if stdin_reader is not None:
            self._spawn(self._copy_in(stdin_reader, master_fd))

    def _open_stdout(self) -> tuple[int | None, int]:
        path = self.stdio.stdout
        try:
            if self.uri.scheme == FILE:
                return None, open_log_file(self.uri.path)
            if path:
                return open_output(fifo_path(path))
            # Nobody wants the output, but the master must be drained or the process blocks.
            return None, os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        except PathError:
            raise
        except OSError as e:
            raise PathError("open", e.filename or fifo_path(path), e.errno) from e

    def _spawn(self, coro: Coroutine[Any, Any, int]) -> asyncio.Task[int]:
        task = asyncio.get_running_loop().create_task(coro)
        self._relays.append(task)
        self._running += 1
        return task

    async def _copy_in(self, reader: int, master: int) -> int:
        try:
            n = await relay(reader, master)
            log.debug("console stdin done after %d bytes", n)
            return n
        except OSError as e:
            # EIO: the tty is gone (its process exited); anything else is worth a word.
            if e.errno != errno.EIO:
                log.warning("copying stdin to the console: %s", describe(e))
            return 0
        finally:
            self._close_fd(reader)
            self._hang_up()  # as Go: stdin closed or broken, release the console
            self._relay_done()

    async def _copy_out(self, master: int, writer: int, holder: int | None) -> int:
        write_wait = FdWaiter(writer, writable=True)
        total = 0
        burst = 0
        quiet = 0.0  # how long EIO has held without a byte
        try:
            while True:
                try:
                    data = os.read(master, _CHUNK)
                except BlockingIOError:
                    if self._hangup:
                        return total
                    await self._readable(master)
                    continue
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    # Every slave fd is closed. (The master then polls as ready all the
                    # time, so it cannot be waited on: look again after short pauses.)
                    if quiet >= _EIO_QUIET:
                        return total
                    pause = min(max(quiet, 0.001), _EIO_QUIET - quiet)
                    await asyncio.sleep(pause)
                    quiet += pause
                    continue
                if not data:
                    return total
                quiet = 0.0
                view = memoryview(data)
                while view:  # all of it out before reading more: the pty buffer holds the rest
                    try:
                        view = view[os.write(writer, view):]
                    except BlockingIOError:
                        await write_wait.wait()
                    except BrokenPipeError:
                        return total
                total += len(data)
                burst += 1
                if burst >= _BURST:
                    burst = 0
                    await asyncio.sleep(0)
        finally:
            log.debug("console output done after %d bytes", total)
            self._close_fd(writer)  # EOF for containerd
            self._close_fd(holder)
            self._relay_done()

    async def _readable(self, fd: int) -> None:
        """Wait until fd is readable or stdin has ended (hang-up)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._output_wake = fut
        loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            loop.remove_reader(fd)
            self._output_wake = None

    def _hang_up(self) -> None:
        self._hangup = True
        if self._output_wake is not None and not self._output_wake.done():
            self._output_wake.set_result(None)

    def _relay_done(self) -> None:
        self._running -= 1
        if self._running == 0 and self._hangup:
            # Both relays are out: closing the master now cannot pull it from under a waiter.
            self._close_fd(self._master)
            self._master = None

    def _close_fd(self, fd: int | None) -> None:
        """Close fd if this ConsoleIO still owns it; every close goes through here, once."""
        if fd is not None and fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)

    def resize(self, width: int, height: int) -> None:
        """ResizePty; a no-op once the console is closed, as in Go."""
        if self._master is not None:
            resize(self._master, width, height)

    def close_stdin(self) -> None:
        """CloseIO: drop our writer of the stdin fifo. Once the client's writer is gone too the
        stdin relay sees EOF and the console is released (the tty hangs up)."""
        self._close_fd(self._stdin_writer)
        self._stdin_writer = None

    async def wait(self, timeout: float) -> None:
        """Wait (bounded) for the output to drain after the process exited."""
        if self._output is not None:
            await asyncio.wait([self._output], timeout=timeout)

    async def aclose(self) -> None:
        """Stop relaying and close every fd, the master last (relays end first)."""
        for task in self._relays:
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
        self._relays.clear()
        self._output = None
        self.close()

    def close(self) -> None:
        """Close every fd still owned; only for when no relay runs (set-up failures, aclose)."""
        for fd in list(self._owned):
            self._close_fd(fd)
        self._master = None
        self._stdin_writer = None
