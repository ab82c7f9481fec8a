"""containerd's stdio for a process that reads and writes it itself (framework).

containerd names a task's stdin, stdout and stderr as paths: fifos its client made and opens from
its side (`ctr`, CRI), or "" for none. A shim whose task is a process of its own (a WebAssembly
runtime, a VM's console) can hand that process the fifos themselves instead of relaying through
pipes. What makes that safe is the order of the opens, the same as containerd's Go shim:

- an output fifo is opened for writing with a blocking open, which returns once the client's
  reader is there: nothing the process writes can be lost to a client that opens late, and the
  client's own blocking open always meets a writer;
- only then is a second, holding reader opened on it, so that the process never gets EPIPE
  (SIGPIPE) when the client goes away (`ctr run -d` exits at once); its output then waits in the
  fifo, up to the pipe's size, as it would in the Go shim's copy;
- stdin is relayed: a client may never open its end (`ctr run` without a terminal does not), so
  the fifo is opened at once without blocking, and a thread of the calling process waits (poll)
  for the client's writer, then copies into a pipe whose read end is the process's stdin, closing
  it at the client's end of file (CloseIO). A read before the client comes waits; it does not see
  end of file. Every path is opened before open_stdio returns, so the process may chroot after.

The output opens block, so call open_stdio in the process that is to use the fds (a child of
the shim), never on a request thread. `file://PATH` URIs are opened for appending, as
containerd's file logging does; `binary://` logging drivers are not supported here (the runc
shim supports them).
"""

from __future__ import annotations

import os

__all__ = ["Stdio", "StdioError", "open_stdio"]


class StdioError(Exception):
    """A stdio path that cannot be used, in Go's words."""


class Stdio:
    """A process's three stdio fds (0, 1 and 2 to be), and the holding readers that keep its
    output fifos open; close() closes them all."""

    __slots__ = ("fds", "holders")

    def __init__(self, fds: tuple[int, int, int], holders: tuple[int, ...]) -> None:
        self.fds = fds
        self.holders = holders

    def install(self) -> None:
        """Make the three fds this process's 0, 1 and 2 (the holders stay where they are)."""
        for target, fd in enumerate(self.fds):
            if fd != target:
                os.dup2(fd, target)

    def close(self) -> None:
        for fd in {*self.fds, *self.holders}:
            if fd > 2:
                os.close(fd)


def open_stdio(stdin: str, stdout: str, stderr: str) -> Stdio:
    """Open containerd's stdio paths for a process, in the order above ("" is /dev/null).

    On failure every fd opened so far is closed and StdioError says which path failed."""
    opened: list[int] = []
    holders: list[int] = []
    relays: list[tuple[int, int]] = []
    try:
        fds = (_open_input(stdin, opened, relays), _open_output(stdout, opened, holders),
               _open_output(stderr, opened, holders))
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    if relays:
        import threading

        threading.Thread(target=_relay, args=relays[0], name="stdin", daemon=True).start()
    return Stdio(fds, tuple(holders))


def _open(path: str, flags: int, opened: list[int]) -> int:
    if not path:
        path = os.devnull
    elif path.startswith("file://") and flags & os.O_WRONLY:
        path = path[len("file://"):]
        flags |= os.O_APPEND | os.O_CREAT
    elif "://" in path:
        from pyrunc.shim.errors import quote

        raise StdioError(f"unsupported stdio URI {quote(path)}: only fifos and file:// logs")
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o640)
    except OSError as e:
        from pyrunc.shim.errors import describe

        raise StdioError(describe(e, "open", path)) from e
    opened.append(fd)
    return fd


def _open_input(path: str, opened: list[int], relays: list[tuple[int, int]]) -> int:
    if not path:
        return _open(path, os.O_RDONLY, opened)
    if "://" in path:
        from pyrunc.shim.errors import quote

        raise StdioError(f"unsupported stdin {quote(path)}: only a fifo")
    source = _open(path, os.O_RDONLY | os.O_NONBLOCK, opened)  # does not wait for a writer
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    opened += (read_end, write_end)
    relays.append((source, write_end))
    return read_end


def _relay(source: int, out: int) -> None:
    """Copy the stdin fifo into the pipe until the client's end of file, then close both.

    Until a writer has come, poll reports nothing on the fifo (Linux reports POLLHUP only once a
    writer has come and gone), so a read of 0 bytes after poll is the client's end of file."""
    import select

    poller = select.poll()
    poller.register(source, select.POLLIN | select.POLLHUP)
    try:
        while True:
            poller.poll()
            try:
                data = os.read(source, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            while data:
                data = data[os.write(out, data):]
    except OSError:  # the process closed its stdin (EPIPE): nothing more to copy
        pass
    finally:
        os.close(source)
        os.close(out)


def _open_output(path: str, opened: list[int], holders: list[int]) -> int:
    fd = _open(path, os.O_WRONLY, opened)
    if path and "://" not in path:
        import stat

        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            holder = _open(path, os.O_RDONLY | os.O_NONBLOCK, opened)
            holders.append(holder)
    return fd
