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

Each relayed stream has a thread of its own, as each has a goroutine in the Go shim. It moves
bytes with splice(2): the kernel moves the pages between the pipes, Python only waits. The fds
are non-blocking and the thread waits in poll(2), on its fd and on the PipeIO's Wakeup: a splice
blocked in the kernel could not be interrupted (closing its fd does not wake it on Linux), and
close() must stop a relay promptly while the process still runs or containerd does not read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import threading
import time

from pyrunc.oci import log
from pyrunc.oci.errors import MessageError, PathError, describe, quote, start_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyrunc.oci.monitor import ExitWatch, ProcessMonitor


_CHUNK = 1 << 20
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT

# How long a logging binary may take to signal readiness on fd 5. The Go runc shim waits without
# a bound; a logger that never answers would then hang Create for good.
LOGGER_READY_TIMEOUT = 10.0
# After the pipes are closed and SIGTERM sent, how long the logger has to exit before SIGKILL
# (Go's binaryIOProcTermTimeout).
LOGGER_EXIT_TIMEOUT = 12.0


class Stdio:
    """The stdio paths containerd asked for ('' for none) and whether a terminal is wanted.

    A value: compared and hashed by its fields, never changed once made.
    """

    __slots__ = ("stderr", "stdin", "stdout", "terminal")

    def __init__(
        self, stdin: str = "", stdout: str = "", stderr: str = "", terminal: bool = False
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal

    def _key(self) -> tuple[str, str, str, bool]:
        return (self.stdin, self.stdout, self.stderr, self.terminal)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stdio) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Stdio(stdin={self.stdin!r}, stdout={self.stdout!r}, stderr={self.stderr!r}, "
                f"terminal={self.terminal!r})")


FIFO = "fifo"
FILE = "file"
BINARY = "binary"
BINARY_V2 = "binary-v2"  # as binary, but the logger must write a byte to fd 5 to be ready

_ENV_PREFIX = "env."


class StdoutURI:
    """Where a process's output goes, as containerd's stdout value says.

    scheme is FIFO, FILE, BINARY or BINARY_V2. path is the fifo (for FIFO the stderr value names
    its own fifo), the log file, or the logging binary. args and env are the logger's, from the
    query: `?k=v` becomes the arguments `k v`, `?env.K=v` the variable `K=v`.
    """

    __slots__ = ("args", "env", "path", "scheme")

    def __init__(
        self, scheme: str, path: str, args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.scheme = scheme
        self.path = path
        self.args = args
        self.env: Mapping[str, str] = {} if env is None else env

    @property
    def is_binary(self) -> bool:
        return self.scheme in (BINARY, BINARY_V2)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StdoutURI) and (
            self.scheme, self.path, self.args, self.env) == (
            other.scheme, other.path, other.args, other.env)

    __hash__ = None  # type: ignore[assignment]  # env is a mapping

    def __repr__(self) -> str:
        return (f"StdoutURI(scheme={self.scheme!r}, path={self.path!r}, args={self.args!r}, "
                f"env={self.env!r})")


def parse_stdout_uri(value: str) -> StdoutURI:
    """Parse containerd's stdout value; ValueError names the value when it cannot be used.

    A value without a scheme is a fifo path, used as given (as Go does, even with '?' in it).
    """
    if not value or value[0] == "/":
        # What containerd nearly always sends, and what urlsplit would find no scheme in:
        # no need to load urllib.parse (and ipaddress) into every shim for it.
        return StdoutURI(FIFO, value)
    import urllib.parse

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
        import urllib.parse

        return urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    return value


class Wakeup:
    """A stop flag that relay threads can also wait on: an eventfd, readable once set.

    set() is for good (nobody reads the eventfd back), so every thread polling it wakes, now
    or the next time it waits. notify() wakes them without setting the flag (ConsoleIO's
    hang-up); a thread that takes a notice with consume() must re-check is_set.
    """

    __slots__ = ("fd", "is_set")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.is_set = False

    def set(self) -> None:
        self.is_set = True  # before the write: whoever sees the fd readable sees the flag
        self.notify()

    def notify(self) -> None:
        if self.fd >= 0:  # else closed already: nobody is left to wake
            os.eventfd_write(self.fd, 1)

    def consume(self) -> bool:
        """Take pending notices; True if the flag is set (and then re-arm it for the others)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        if self.is_set:
            self.notify()
        return self.is_set

    def close(self) -> None:
        """Only once no thread waits on it any more."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def poller(fd: int, events: int, wakeup: Wakeup | None) -> select.poll:
    """A poll set for waiting on fd (events) or the wakeup."""
    p = select.poll()
    p.register(fd, events)
    if wakeup is not None:
        p.register(wakeup.fd, _POLLIN)
    return p


def wait_ready(p: select.poll, wakeup: Wakeup | None, timeout_ms: float | None = None) -> bool:
    """Block on poll set p (built by poller()); False if the wakeup fired, True otherwise
    (ready, or timeout_ms ran out)."""
    for fd, revents in p.poll(timeout_ms):
        if wakeup is not None and fd == wakeup.fd:
            return False
        if revents & select.POLLNVAL:  # closed under us: a bug, and polling again would spin
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return True


def relay(src: int, dst: int, wakeup: Wakeup | None = None) -> int:
    """Move everything from src to dst until src reaches EOF, blocking the calling thread; both
    fds must be non-blocking.

    Returns the byte count. Stops early (without raising) once dst's reader is gone for good,
    or the wakeup is set. Only this relay may read src: it counts on src staying readable
    between a poll and the next splice.
    """
    src_poll = poller(src, _POLLIN, wakeup)
    dst_poll = poller(dst, _POLLOUT, wakeup)
    use_splice = True
    total = 0
    src_ready = False  # src polled readable, and nothing moved since
    pending = memoryview(b"")
    while wakeup is None or not wakeup.is_set:
        try:
            if pending:
                n = os.write(dst, pending)
                pending = pending[n:]
                total += n
                continue
            if use_splice:
                n = os.splice(src, dst, _CHUNK, flags=_SPLICE_FLAGS)
                if n == 0:
                    return total
                total += n
                src_ready = False
                continue
            data = os.read(src, _CHUNK)
            if not data:
                return total
            pending = memoryview(data)
        except BlockingIOError:
            # Empty source or full destination; splice does not say which. Wait for src first:
            # if it was readable already, that costs one poll, and then it is dst that is full.
            if pending or (use_splice and src_ready):
                ready = wait_ready(dst_poll, wakeup)
            else:
                ready = wait_ready(src_poll, wakeup)
                src_ready = use_splice
            if not ready:
                return total
        except OSError as e:
            if e.errno == errno.EINVAL and use_splice:
                use_splice = False  # not a pipe on either side (a file opened O_APPEND, a tty)
                continue
            if e.errno == errno.EPIPE:
                return total
            raise
    return total


def open_fifo_writer(path: str) -> tuple[int, int] | None:
    """Open (holding reader, writer) on an output fifo, neither blocking; None while nobody
    reads the fifo yet.

    The writer is opened first, and only once containerd's reader is there: our own reader,
    opened first, would let the write open succeed with nobody else reading, and a client
    whose open(2) comes only after our writer has come and gone waits in the kernel for a
    writer that never comes back, and sees none of what was written (the Go shim's blocking
    open of the writer has the same effect). Our reader then keeps writes from failing while
    containerd's reader is away (a restart); containerd still sees EOF when our writer closes.
    """
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:  # no reader yet
            return None
        raise
    try:
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(writer)
        raise
    return reader, writer


# While an output fifo has no reader, open_fifo_writer is tried again after pauses growing
# from the first to the last of these (seconds): the kernel gives no event to wait for.
_READER_PAUSES = (0.001, 0.25)


def await_fifo_reader(path: str, wakeup: Wakeup) -> tuple[int, int] | None:
    """open_fifo_writer, tried until the fifo has a reader; None if the wakeup is set first.

    Meanwhile the process's output waits in its pipe: it is only delayed, never lost."""
    sleeper = poller(wakeup.fd, _POLLIN, None)
    pause, longest = _READER_PAUSES
    while True:
        opened = open_fifo_writer(path)
        if opened is not None:
            return opened
        if sleeper.poll(pause * 1000) and wakeup.consume():
            return None
        pause = min(pause * 2, longest)


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


def open_output(path: str) -> tuple[int | None, int] | None:
    """An output target: a fifo (writer and holding reader; None while nobody reads it, see
    await_fifo_reader) or, for an existing regular file, append to it. A missing path is an
    error (FileNotFoundError), as in the Go shim: creating a regular file where containerd's
    fifo should be would hide the fault and grow unread."""
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


def join_all(threads: list[threading.Thread]) -> None:
    """Join every thread of the list (but the caller's own) and empty it."""
    current = threading.current_thread()
    for thread in threads:
        if thread is not current:
            thread.join()
    threads.clear()


def join_until(threads: list[threading.Thread], deadline: float) -> None:
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def close_owned(owned: set[int], fd: int | None) -> None:
    """Close fd if it is still in `owned`: every close of a PipeIO's or ConsoleIO's fds goes
    through here, relay threads' too. set.remove is atomic, so of two callers only one closes
    (a second close could hit a number the kernel has handed out again)."""
    if fd is None:
        return
    try:
        owned.remove(fd)
    except KeyError:
        return
    os.close(fd)


class PipeIO:
    """The pipes between one container process and the shim, and their relays.

    Life: __init__ makes the pipes (and checks the stdout URI); runc_stdio() is what runc gets;
    after runc has started the process, close_runc_side() drops runc's ends here and start()
    opens containerd's fifos or the log file and begins relaying (a thread per stream), or
    starts the logging binary and waits until it is ready. wait() lets the output drain after
    the process exited; close() ends it all, and is safe in any state, more than once.

    With binary:// there is no stdin (as in Go) and both output pipes exist whatever stderr says;
    their read ends go to the logger, which sees EOF once the process and its children are gone.
    """

    __slots__ = (
        "_container_id",
        "_logger",
        "_logger_killed",
        "_monitor",
        "_namespace",
        "_outputs",
        "_owned",
        "_relays",
        "_runc_side",
        "_shim_side",
        "_stdin_writer",
        "_wakeup",
        "stdio",
        "uri",
    )

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
        # Everything close() looks at first, so that it works whatever fails below.
        self._owned: set[int] = set()
        self._relays: list[threading.Thread] = []
        self._outputs: list[threading.Thread] = []  # the stdout/stderr relays among them
        self._wakeup: Wakeup | None = None
        self._logger: tuple[int, ExitWatch] | None = None  # pid, exit
        self._logger_killed = False
        self._stdin_writer: int | None = None  # our write end of the stdin fifo (CloseIO)
        self._runc_side: list[int | None] = [None, None, None]
        self._shim_side: list[int | None] = [None, None, None]
        try:
            self.uri = parse_stdout_uri(stdio.stdout)
        except ValueError as e:
            raise _invalid(str(e)) from e
        if self.uri.is_binary and monitor is None:
            raise _invalid(f"{quote(stdio.stdout)}: a logging binary needs a process monitor")
        self._monitor = monitor
        self._container_id = container_id
        self._namespace = namespace
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

    def start(self, ready_timeout: float = LOGGER_READY_TIMEOUT) -> None:
        """Open containerd's fifos (or the log file) and start relaying; for binary://, start
        the logger and wait (at most ready_timeout seconds) until it says it is ready.

        Raises OSError naming the path or the URI; a logger that cannot start or is not ready
        in time is killed. Whatever it raises, close() cleans up.
        """
        if self.uri.is_binary:
            self._start_logger(ready_timeout)
        else:
            self._start_relays()

    def _start_relays(self) -> None:
        self._wakeup = Wakeup()
        stdin_path = fifo_path(self.stdio.stdin)
        if stdin_path and self._shim_side[0] is not None:
            reader, self._stdin_writer = open_stdin_fifo(stdin_path)
            self._owned.update((reader, self._stdin_writer))
            os.set_blocking(self._shim_side[0], False)
            self._spawn_relay("stdin", reader, stdin_path, (None, self._shim_side[0]))
        for index, path in ((1, self.stdio.stdout), (2, self.stdio.stderr)):
            src = self._shim_side[index]
            if not path or src is None:
                continue
            target = fifo_path(path)
            try:
                if self.uri.scheme == FILE:
                    opened: tuple[int | None, int] | None = (None, open_log_file(self.uri.path))
                else:
                    opened = open_output(target)
            except PathError:
                raise
            except OSError as e:
                raise PathError("open", e.filename or target, e.errno) from e
            if opened is not None:
                self._own(opened)
            os.set_blocking(src, False)
            self._spawn_relay("stdout" if index == 1 else "stderr", src, target, opened)

    def _start_logger(self, ready_timeout: float) -> None:
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
                got = _read_ready(ready_r, ready_timeout)
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

    def _spawn_relay(self, name: str, src: int, target: str,
                     opened: tuple[int | None, int] | None) -> None:
        """A relay thread from src to opened's writer; with opened None (a fifo nobody reads
        yet), the thread first waits for target's reader."""
        output = name != "stdin"
        thread = threading.Thread(target=self._run_relay, args=(src, target, opened),
                                  name=f"relay-{name}", daemon=True)
        thread.start()
        self._relays.append(thread)
        if output:
            self._outputs.append(thread)

    def _own(self, opened: tuple[int | None, int]) -> None:
        holder, writer = opened
        self._owned.add(writer)
        if holder is not None:
            self._owned.add(holder)

    def _run_relay(self, src: int, target: str, opened: tuple[int | None, int] | None) -> None:
        dst: int | None = None
        try:
            if opened is None:
                assert self._wakeup is not None
                log.debug("waiting for a reader of %s", target)
                opened = await_fifo_reader(target, self._wakeup)
                if opened is None:
                    return  # close() came first
                self._own(opened)
            dst = opened[1]
            n = relay(src, dst, self._wakeup)
            log.debug("relay %d -> %d done after %d bytes", src, dst, n)
        except OSError as e:
            log.warning("relaying fd %d (%s): %s", src, target, describe(e))
        finally:
            self._close_fd(dst)  # EOF for whoever reads dst (containerd, or the container)

    def _close_fd(self, fd: int | None) -> None:
        close_owned(self._owned, fd)

    def close_stdin(self) -> None:
        """CloseIO: drop our writer of the stdin fifo, so the container gets EOF once the
        client's writer is gone too."""
        self._close_fd(self._stdin_writer)
        self._stdin_writer = None

    def wait(self, timeout: float) -> None:
        """Wait (at most timeout seconds) for stdout and stderr to drain after the process
        exited: the relays end, or the logging binary exits. (stdin ends only with CloseIO,
        so it is not waited for.)"""
        deadline = time.monotonic() + timeout
        join_until(self._outputs, deadline)
        if self._logger is not None:
            self._logger[1].wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop relaying, close every fd and stop the logging binary; blocks until done.

        The relays stop first (each wakes from its poll, or sees the flag between two
        transfers) and their threads are joined, so no fd is closed while a relay still
        uses it. A logging binary is then asked to stop (SIGTERM) and given
        LOGGER_EXIT_TIMEOUT to exit before it is killed, as Go's binaryIO.Close does.
        """
        if self._wakeup is not None:
            self._wakeup.set()
        join_all(self._relays)
        self._outputs.clear()
        for fd in list(self._owned):
            self._close_fd(fd)
        self._stdin_writer = None
        if self._wakeup is not None:
            self._wakeup.close()
        self._stop_logger()

    def _stop_logger(self) -> None:
        if self._logger is None:
            return
        pid, exited = self._logger
        if not self._logger_killed and not exited.done():
            _signal(pid, signal.SIGTERM)
            exited.wait(LOGGER_EXIT_TIMEOUT)
        if not exited.done():
            if not self._logger_killed:
                log.warning("logging binary (pid %d) did not exit after SIGTERM, killing it", pid)
            self._kill_logger()
            exited.wait(LOGGER_EXIT_TIMEOUT)
        self._logger = None

    def _kill_logger(self) -> None:
        # Until the watch is set the pid is not reaped, so it cannot have been reused.
        if self._logger is not None and not self._logger[1].done():
            _signal(self._logger[0], signal.SIGKILL)
            self._logger_killed = True


def _read_ready(fd: int, timeout: float) -> bool:
    """Wait (at most timeout seconds) for the logger's readiness byte or EOF on fd; True if a
    byte came. TimeoutError if neither did."""
    p = select.poll()
    p.register(fd, _POLLIN)
    if not p.poll(max(0.0, timeout) * 1000):
        raise TimeoutError
    return bool(os.read(fd, 1))


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _checked_open(path: str, flags: int, mode: int = 0o777) -> int:
    try:
        return os.open(path, flags, mode)
    except OSError as e:
        raise PathError("open", path, e.errno) from e
