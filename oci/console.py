"""A container process's terminal: the pty master from runc, relayed to containerd's fifos.

With terminal=true runc makes the pty itself and hands the master over a unix socket (`runc
create|exec --console-socket PATH`, go-runc's NewTempConsoleSocket and ReceiveMaster). The shim
then relays, as the Go shim's linuxPlatform.CopyConsole does: the stdin fifo into the master, the
master into the stdout fifo, each direction in a thread of its own. There is no stderr: the
process writes it to the same tty.

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
import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time

from pyrunc.oci import log
from pyrunc.oci.errors import MessageError, PathError, describe, quote
from pyrunc.oci.stdio import (
    FILE,
    Stdio,
    Wakeup,
    await_fifo_reader,
    close_owned,
    fifo_path,
    join_all,
    join_until,
    open_log_file,
    open_output,
    open_stdin_fifo,
    parse_stdout_uri,
    poller,
    relay,
    wait_ready,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType


_CHUNK = 64 << 10
# EIO on the master says every slave fd is closed, but not always that the output has all been
# read: the kernel can answer EIO while the last writes are still on their way from the slave's
# buffer to the master's (seen here: up to 11 KiB more came after the first EIO). The Go shim
# takes EIO as "the other end went away, maybe for now" and reads on until the console is shut
# down. Here the output ends once EIO has held for this long with nothing more to read.
_EIO_QUIET = 0.05
_MAX_NAME = 4096  # runc sends the pty's name with the fd (libcontainer/utils MaxNameLen)
_SOCKET_NAME = "pty.sock"
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


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


def _aborted() -> ConnectionAbortedError:
    return ConnectionAbortedError(errno.ECONNABORTED, "console socket closed")


class ConsoleSocket:
    """A listening socket for `--console-socket`, in a private directory (0700) under /tmp.

    The directory keeps the path short (sun_path holds 108 bytes) and out of reach of other
    users. close() removes both.
    """

    __slots__ = ("_busy", "_closed", "_conn", "_dir", "_sock", "path")

    def __init__(self) -> None:
        self._dir = _private_dir("/tmp", "pyrunc-pty")
        self.path = os.path.join(self._dir, _SOCKET_NAME)
        self._sock: socket.socket | None = None
        self._conn: socket.socket | None = None  # runc's connection, while receive_master reads
        self._closed = False
        self._busy = threading.Lock()  # held by receive_master: close() waits for it to leave
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(self.path)
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def receive_master(self, timeout: float) -> int:
        """Accept runc's connection and return the pty master it sends (SCM_RIGHTS), blocking.

        Call it once runc has returned, or while it runs: runc's connection and message wait in
        the socket's backlog. The fd is the caller's, non-blocking and close-on-exec. Raises
        TimeoutError after timeout seconds, ConnectionError if runc hangs up without sending
        one fd, ConnectionAbortedError if the socket is (or gets) closed: close() from another
        thread ends a receive in progress at once.
        """
        deadline = time.monotonic() + timeout
        with self._busy:
            sock = self._sock
            if self._closed or sock is None:
                raise _aborted()
            while True:
                if self._wait_readable(sock, deadline) & _GONE:
                    raise _aborted()  # shut down by someone else: accept would not block
                try:
                    conn, _ = sock.accept()
                    break
                except BlockingIOError:  # the connection went away again
                    continue
            self._conn = conn
            try:
                if self._closed:  # close() may have looked for a connection just before
                    raise _aborted()
                conn.setblocking(False)
                return self._receive_fd(conn, deadline)
            finally:
                self._conn = None
                conn.close()

    def _wait_readable(self, sock: socket.socket, deadline: float) -> int:
        """Poll sock until it is readable (its revents), the deadline or close()."""
        p = select.poll()
        p.register(sock, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            events = p.poll(remaining * 1000)
            if self._closed:  # close() shut the socket down to wake us
                raise _aborted()
            if events:
                return events[0][1]

    def _receive_fd(self, conn: socket.socket, deadline: float) -> int:
        """Read runc's message (the pty's name, with the master attached) until the fd comes."""
        int_size = array.array("i").itemsize
        ancillary = socket.CMSG_SPACE(4 * int_size)  # room to notice a sender passing too many
        while True:
            try:
                data, ancdata, flags, _ = conn.recvmsg(
                    _MAX_NAME, ancillary, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                self._wait_readable(conn, deadline)
                continue
            if self._closed:
                raise _aborted()
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

    def close(self) -> None:
        """Close and remove the socket; from another thread, it first ends a receive_master in
        progress (shutdown wakes its poll; closing an fd would not) and waits for it."""
        self._closed = True
        for sock in (self._sock, self._conn):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with self._busy:
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


def resize(master_fd: int, width: int, height: int) -> None:
    """Set the terminal's size (ResizePty); the kernel tells the process with SIGWINCH."""
    winsize = struct.pack("HHHH", height, width, 0, 0)  # struct winsize: rows, cols, x, y
    fcntl.ioctl(master_fd, termios.TIOCSWINSZ, winsize)


class ConsoleIO:
    """The relays between one process's pty master and containerd's stdin and stdout fifos.

    Life: construct with the Stdio (checks the stdout URI); start(master) once runc has sent the
    master; resize() for ResizePty; close_stdin() for CloseIO; wait() for the output to drain
    after the process exited; close() at the end (blocking; safe in any state, more than once).
    A fifo or file:// stdout is supported; a logging binary is not.
    """

    __slots__ = (
        "_hangup",
        "_lock",
        "_master",
        "_output",
        "_owned",
        "_relays",
        "_running",
        "_stdin_writer",
        "_wakeup",
        "stdio",
        "uri",
    )

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
        self._relays: list[threading.Thread] = []
        self._output: list[threading.Thread] = []  # the output relay, once started
        self._running = 0  # relays still using the master; the last one out closes it
        self._hangup = False  # stdin ended: the output relay stops once the master is empty
        self._wakeup: Wakeup | None = None
        # Held to close the master or use it from outside the relays (resize): the number
        # must not be closed, and reused, between resize's check and its ioctl.
        self._lock = threading.Lock()

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
        opened = self._open_stdout()
        if opened is not None:
            self._own(opened)
        self._wakeup = Wakeup()
        # Counted before either starts, so that the first one out cannot think it the last.
        self._running = 1 if stdin_reader is None else 2
        self._output.append(
            self._spawn("relay-console-out", self._copy_out, master_fd, opened))
        if stdin_reader is not None:
            self._spawn("relay-console-in", self._copy_in, stdin_reader, master_fd)

    def _open_stdout(self) -> tuple[int | None, int] | None:
        """(holder, writer) of the output; None for a fifo nobody reads yet."""
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

    def _own(self, opened: tuple[int | None, int]) -> None:
        holder, writer = opened
        self._owned.add(writer)
        if holder is not None:
            self._owned.add(holder)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._relays.append(thread)
        return thread

    def _copy_in(self, reader: int, master: int) -> None:
        try:
            n = relay(reader, master, self._wakeup)
            log.debug("console stdin done after %d bytes", n)
        except OSError as e:
            # EIO: the tty is gone (its process exited); anything else is worth a word.
            if e.errno != errno.EIO:
                log.warning("copying stdin to the console: %s", describe(e))
        finally:
            self._close_fd(reader)
            self._hang_up()  # as Go: stdin closed or broken, release the console
            self._relay_done()

    def _copy_out(self, master: int, opened: tuple[int | None, int] | None) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        total = 0
        quiet = 0.0  # how long EIO has held without a byte
        holder = writer = None
        try:
            if opened is None:  # the stdout fifo has no reader yet: the output waits in the pty
                opened = await_fifo_reader(fifo_path(self.stdio.stdout), wakeup)
                if opened is None:
                    return  # close() came first
                self._own(opened)
            holder, writer = opened
            readable = poller(master, select.POLLIN, wakeup)
            writable = poller(writer, select.POLLOUT, wakeup)
            while not wakeup.is_set:
                try:
                    data = os.read(master, _CHUNK)
                except BlockingIOError:
                    if self._hangup:  # as Go: released, and nothing more to read
                        return
                    if not wait_ready(readable, wakeup) and wakeup.consume():
                        return
                    continue  # readable, or the hang-up's notice: read again
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    # Every slave fd is closed. (The master then polls as ready all the
                    # time, so it cannot be waited on: look again after short pauses.)
                    if quiet >= _EIO_QUIET:
                        return
                    pause = min(max(quiet, 0.001), _EIO_QUIET - quiet)
                    # Only the wakeup in the poll set: a sleep that close() cuts short.
                    if not wait_ready(_sleeper(wakeup), wakeup, pause * 1000):
                        wakeup.consume()  # a hang-up notice, or the flag: the loop says
                    quiet += pause
                    continue
                if not data:
                    return
                quiet = 0.0
                view = memoryview(data)
                while view:  # all of it out before reading more: the pty buffer holds the rest
                    try:
                        view = view[os.write(writer, view):]
                    except BlockingIOError:
                        if not wait_ready(writable, wakeup) and wakeup.consume():
                            return
                    except BrokenPipeError:
                        return
                total += len(data)
        except OSError as e:
            log.warning("copying the console to its output: %s", describe(e))
        finally:
            log.debug("console output done after %d bytes", total)
            self._close_fd(writer)  # EOF for containerd
            self._close_fd(holder)
            self._relay_done()

    def _hang_up(self) -> None:
        self._hangup = True
        if self._wakeup is not None:
            self._wakeup.notify()  # the output relay may be waiting for the master

    def _relay_done(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._hangup:
                # Both relays are out: closing the master now cannot pull it from under a waiter.
                self._close_fd(self._master)
                self._master = None

    def _close_fd(self, fd: int | None) -> None:
        close_owned(self._owned, fd)

    def resize(self, width: int, height: int) -> None:
        """ResizePty; a no-op once the console is closed, as in Go."""
        with self._lock:
            if self._master is not None:
                resize(self._master, width, height)

    def close_stdin(self) -> None:
        """CloseIO: drop our writer of the stdin fifo. Once the client's writer is gone too the
        stdin relay sees EOF and the console is released (the tty hangs up)."""
        self._close_fd(self._stdin_writer)
        self._stdin_writer = None

    def wait(self, timeout: float) -> None:
        """Wait (at most timeout seconds) for the output to drain after the process exited;
        after a hang-up, also for the stdin relay, which releases the console on its way out."""
        deadline = time.monotonic() + timeout
        join_until(self._output, deadline)
        if self._hangup:
            join_until(self._relays, deadline)

    def close(self) -> None:
        """Stop relaying and close every fd, the master last (relays end first); blocks until
        the relay threads are gone."""
        if self._wakeup is not None:
            self._wakeup.set()
        join_all(self._relays)
        self._output.clear()
        with self._lock:
            for fd in list(self._owned):
                self._close_fd(fd)
            self._master = None
        self._stdin_writer = None
        if self._wakeup is not None:
            self._wakeup.close()


def _sleeper(wakeup: Wakeup) -> select.poll:
    p = select.poll()
    p.register(wakeup.fd, select.POLLIN)
    return p
