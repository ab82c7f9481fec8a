"""A container process's stdio: pipes to runc on one side, containerd's fifos on the other.

The container writes into OS pipes that the shim owns; the shim relays them into the fifos that
containerd (or ctr) reads. Holding the pipes rather than handing runc the fifos means output is
never lost while nobody reads: a containerd restart just pauses the relay. As the Go shim does,
the shim also holds its own read end of each output fifo (so writing never fails with EPIPE while
containerd is away) and its own write end of the stdin fifo (so the container sees EOF on stdin
only when CloseIO says so, not whenever a client disconnects).

The stdout value containerd sends is a URI (Go's createIO in pkg/process/io.go):
- a plain path or fifo://path: the fifos above;
- file:///path: the shim appends stdout and stderr to one file (a log, no fifos);
- binary:///path?k=v: a logging binary gets the read ends of the stdout and stderr pipes as fds 3
  and 4 and nothing is relayed here (containerd's runtime/v2/logging is the logger's side).

The relay moves bytes with splice(2): the kernel copies between the pipes, Python only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrunc.oci.errors import MessageError, PathError, describe, quote, start_failure
from pyrunc.oci.monitor import Exit, ProcessMonitor

log = logging.getLogger("pyrunc.stdio")

_CHUNK = 1 << 20
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_BURST = 16  # successful transfers before yielding to other work on the loop

# How long a logging binary may take to signal readiness on fd 5. The Go runc shim waits without
# a bound; a logger that never answers would then hang Create for good.
LOGGER_READY_TIMEOUT = 10.0
# After the pipes are closed and SIGTERM sent, how long the logger has to exit before SIGKILL
# (Go's binaryIOProcTermTimeout).
LOGGER_EXIT_TIMEOUT = 12.0


@dataclass(frozen=True)
class Stdio:
    """The stdio paths containerd asked for ('' for none) and whether a terminal is wanted."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


FIFO = "fifo"
FILE = "file"
BINARY = "binary"
BINARY_V2 = "binary-v2"  # as binary, but the logger must write a byte to fd 5 to be ready

_ENV_PREFIX = "env."


@dataclass(frozen=True)
class StdoutURI:
    """Where a process's output goes, as containerd's stdout value says.

    scheme is FIFO, FILE, BINARY or BINARY_V2. path is the fifo (for FIFO the stderr value names
    its own fifo), the log file, or the logging binary. args and env are the logger's, from the
    query: `?k=v` becomes the arguments `k v`, `?env.K=v` the variable `K=v`.
    """

    scheme: str
    path: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_binary(self) -> bool:
        return self.scheme in (BINARY, BINARY_V2)


def parse_stdout_uri(value: str) -> StdoutURI:
    """Parse containerd's stdout value; ValueError names the value when it cannot be used.

    A value without a scheme is a fifo path, used as given (as Go does, even with '?' in it).
    """
    parts = urllib.parse.urlsplit(value)
    scheme = parts.scheme
    if not scheme:
        return StdoutURI(FIFO, value)
    if scheme not in (FIFO, FILE, BINARY, BINARY_V2):
        raise ValueError(f"unknown STDIO scheme {scheme} in {quote(value)}")
    # Go takes u.Path and ignores the host, so "file://var/log/x" would write to /log/x. Refuse
    # it instead: the path must be absolute, after an empty authority.
    path = urllib.parse.unquote(parts.path)
    if parts.netloc or not os.path.isabs(path):
        raise ValueError(f"{quote(value)} must name an absolute path, as {scheme}:///abs/path")
    if scheme in (FIFO, FILE):
        return StdoutURI(scheme, path)
    # Go ranges over url.Query(), a map: first value of each key, in no particular order. Here
    # the order is the query's.
    args: list[str] = []
    env: dict[str, str] = {}
    seen: set[str] = set()
    for key, val in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key in seen:
            continue
        seen.add(key)
        if key.startswith(_ENV_PREFIX):
            env[key[len(_ENV_PREFIX):]] = val
        else:
            args += [key, val]
    return StdoutURI(scheme, path, tuple(args), env)


def fifo_path(value: str) -> str:
    """A stdin or stderr value: a path, or fifo:///path."""
    if value.startswith(FIFO + "://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    return value


class FdWaiter:
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
    read_wait = FdWaiter(src, writable=False)
    write_wait = FdWaiter(dst, writable=True)
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
            if pending:  # the write blocked
                await write_wait.wait()
            elif not use_splice:  # the read blocked
                await read_wait.wait()
            # Empty source or full destination; splice does not say which, so alternate.
            elif src_may_be_empty:
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


def open_fifo_writer(path: str) -> tuple[int, int]:
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


def open_stdin_fifo(path: str) -> tuple[int, int]:
    """Open (reader, holding writer) on the stdin fifo, neither blocking; OSError names path.

    The holding writer keeps the reader from seeing EOF until CloseIO closes it.
    """
    reader = _checked_open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        writer = _checked_open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(reader)
        raise
    return reader, writer


def open_output(path: str) -> tuple[int | None, int]:
    """An output target: a fifo (with a holding reader) or, for an existing regular file,
    append to it. A missing path is an error (FileNotFoundError), as in the Go shim: creating a
    regular file where containerd's fifo should be would hide the fault and grow unread."""
    if _is_fifo(path):
        return open_fifo_writer(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    return None, fd


def open_log_file(path: str) -> int:
    """Open the file of a file:// URI for appending, creating it (0644) and its directory
    (0755) as Go's createIO does; PathError says which step failed, as Go's would."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
    except FileExistsError as e:  # a file where the directory should be: so Go's MkdirAll
        raise PathError("mkdir", directory, errno.ENOTDIR) from e
    except OSError as e:
        raise PathError("mkdir", e.filename or directory, e.errno) from e
    return _checked_open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _is_fifo(path: str) -> bool:
    return stat.S_ISFIFO(os.stat(path).st_mode)


def _invalid(message: str) -> OSError:
    return MessageError(errno.EINVAL, message)


class PipeIO:
    """The pipes between one container process and the shim, and their relays.

    Life: __init__ makes the pipes (and checks the stdout URI); runc_stdio() is what runc gets;
    after runc has started the process, close_runc_side() drops runc's ends here and
    `await start_async()` (or start(), when no logging binary is involved) opens containerd's
    fifos or the log file and begins relaying, or starts the logging binary.

    With binary:// there is no stdin (as in Go) and both output pipes exist whatever stderr says;
    their read ends go to the logger, which sees EOF once the process and its children are gone.
    """

    def __init__(
        self,
        stdio: Stdio,
        uid: int = -1,
        gid: int = -1,
        *,
        monitor: ProcessMonitor | None = None,
        container_id: str = "",
        namespace: str = "",
    ) -> None:
        self.stdio = stdio
        try:
            self.uri = parse_stdout_uri(stdio.stdout)
        except ValueError as e:
            raise _invalid(str(e)) from e
        if self.uri.is_binary and monitor is None:
            raise _invalid(f"{quote(stdio.stdout)}: a logging binary needs a process monitor")
        self._monitor = monitor
        self._container_id = container_id
        self._namespace = namespace
        self._runc_side: list[int | None] = [None, None, None]
        self._shim_side: list[int | None] = [None, None, None]
        self._stdin_writer: int | None = None  # our write end of the stdin fifo (CloseIO)
        self._relays: list[asyncio.Task[int]] = []
        self._outputs: list[asyncio.Task[int]] = []  # the stdout/stderr relays among them
        self._owned: set[int] = set()
        self._logger: tuple[int, asyncio.Future[Exit]] | None = None  # pid, exit
        if self.uri.is_binary:
            wanted = (False, True, True)
        else:
            wanted = (bool(stdio.stdin), bool(stdio.stdout), bool(stdio.stderr))
        try:
            for index, want in enumerate(wanted):
                if not want:
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
        """Open containerd's fifos (or the log file) and start relaying. Raises OSError naming
        the path. With a logging binary, use start_async()."""
        if self.uri.is_binary:
            raise RuntimeError(f"{quote(self.stdio.stdout)}: a logging binary needs start_async()")
        self._start_relays()

    async def start_async(self, ready_timeout: float = LOGGER_READY_TIMEOUT) -> None:
        """start(), or for binary:// start the logger and wait until it says it is ready.

        Raises OSError naming the URI if the logger cannot start or is not ready in time (and
        then kills it).
        """
        if self.uri.is_binary:
            await self._start_logger(ready_timeout)
        else:
            self._start_relays()

    def _start_relays(self) -> None:
        stdin_path = fifo_path(self.stdio.stdin)
        if stdin_path and self._shim_side[0] is not None:
            reader, self._stdin_writer = open_stdin_fifo(stdin_path)
            self._owned.update((reader, self._stdin_writer))
            os.set_blocking(self._shim_side[0], False)
            self._spawn_relay(reader, self._shim_side[0], output=False)
        for index, path in ((1, self.stdio.stdout), (2, self.stdio.stderr)):
            src = self._shim_side[index]
            if not path or src is None:
                continue
            holder: int | None = None
            try:
                if self.uri.scheme == FILE:
                    writer = open_log_file(self.uri.path)
                else:
                    holder, writer = open_output(fifo_path(path))
            except PathError:
                raise
            except OSError as e:
                raise PathError("open", e.filename or fifo_path(path), e.errno) from e
            self._owned.add(writer)
            if holder is not None:
                self._owned.add(holder)
            os.set_blocking(src, False)
            self._spawn_relay(src, writer, output=True)

    async def _start_logger(self, ready_timeout: float) -> None:
        """Go's NewBinaryIO: fds 3 and 4 the output pipes, fd 5 the readiness pipe."""
        assert self._monitor is not None  # checked in __init__
        uri = self.stdio.stdout
        stdout_r, stderr_r = self._shim_side[1], self._shim_side[2]
        assert stdout_r is not None and stderr_r is not None
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        self._owned.update((ready_r, ready_w))
        # As Go's exec.Cmd with Env set: only these, not the shim's environment.
        env = {k: v for k, v in self.uri.env.items()
               if k not in ("CONTAINER_ID", "CONTAINER_NAMESPACE")}
        env.update(CONTAINER_ID=self._container_id, CONTAINER_NAMESPACE=self._namespace)
        try:
            pid, exited = self._monitor.spawn(
                [self.uri.path, *self.uri.args], env=env,
                extra_fds=[stdout_r, stderr_r, ready_w],
            )
        except OSError as e:  # as Go's NewBinaryIO words it
            raise MessageError(
                e.errno, f"failed to start binary process: {start_failure(self.uri.path, e)}"
            ) from e
        finally:
            # The logger holds these now (or nobody will): ours would hide its EOF on fd 5
            # and keep the pipes readable after it is gone.
            for fd in (ready_w, stdout_r, stderr_r):
                self._close_fd(fd)
            self._shim_side[1] = self._shim_side[2] = None
        self._logger = (pid, exited)
        log.debug("logging binary %s started as pid %d", uri, pid)
        try:
            try:
                async with asyncio.timeout(ready_timeout):
                    got = await _read_ready(ready_r)
            except TimeoutError:
                raise MessageError(
                    errno.ETIMEDOUT,
                    f"logging binary {uri} not ready after {ready_timeout:g}s",
                ) from None
            except OSError as e:
                raise MessageError(
                    e.errno, f"failed to read from logging binary: {describe(e)}"
                ) from e
            if not got and self.uri.scheme == BINARY_V2:
                raise MessageError(
                    errno.EIO, f"logging binary {uri} exited without calling ready")
        except BaseException:
            self._kill_logger()
            raise
        finally:
            self._close_fd(ready_r)

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
        """Wait (bounded) for stdout and stderr to drain after the process exited: the relays
        end, or the logging binary exits. (stdin ends only with CloseIO, so it is not waited
        for.)"""
        waits: list[asyncio.Future[int] | asyncio.Future[Exit]] = list(self._outputs)
        if self._logger is not None:
            waits.append(self._logger[1])
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    async def aclose(self) -> None:
        """Stop relaying and close every fd. Relays end before their fds are closed, so no
        fd number is closed twice or unregistered from the loop after being reused.

        A logging binary is then asked to stop (SIGTERM) and given LOGGER_EXIT_TIMEOUT to exit
        before it is killed, as Go's binaryIO.Close does."""
        for task in self._relays:
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
        self._relays.clear()
        self._outputs.clear()
        self._close_fds()
        await self._stop_logger()

    def close(self) -> None:
        """Close every fd still owned; only for when no relay runs (set-up failures, aclose).
        A logging binary still running is killed: there is no waiting here."""
        self._close_fds()
        self._kill_logger()

    def _close_fds(self) -> None:
        for fd in list(self._owned):
            self._close_fd(fd)
        self._stdin_writer = None

    async def _stop_logger(self) -> None:
        if self._logger is None:
            return
        pid, exited = self._logger
        if not exited.done():
            _signal(pid, signal.SIGTERM)
            await asyncio.wait([exited], timeout=LOGGER_EXIT_TIMEOUT)
        if not exited.done():
            log.warning("logging binary (pid %d) did not exit after SIGTERM, killing it", pid)
            _signal(pid, signal.SIGKILL)
            await asyncio.wait([exited], timeout=LOGGER_EXIT_TIMEOUT)
        self._logger = None

    def _kill_logger(self) -> None:
        # The exit future is resolved when the reaper reaps the pid, on this loop: while it is
        # pending the pid cannot have been reused.
        if self._logger is not None and not self._logger[1].done():
            _signal(self._logger[0], signal.SIGKILL)


async def _read_ready(fd: int) -> bool:
    """Wait for the logger's readiness byte or EOF on fd; True if a byte came."""
    os.set_blocking(fd, False)
    waiter = FdWaiter(fd, writable=False)
    while True:
        try:
            return bool(os.read(fd, 1))
        except BlockingIOError:
            await waiter.wait()


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _checked_open(path: str, flags: int, mode: int = 0o777) -> int:
    try:
        return os.open(path, flags, mode)
    except OSError as e:
        raise PathError("open", path, e.errno) from e
