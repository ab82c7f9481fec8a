"""Terminals: the console socket runc sends the pty master over, and the relay between the master
and containerd's fifos, driven against a real pty pair and real fifos."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import struct
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrunc.oci.console import ConsoleIO, ConsoleSocket, resize
from pyrunc.oci.stdio import Stdio
from tests.unit.threads import (
    TIMEOUT,
    in_thread,
    joined,
    open_fifo_reader,
    open_late_reader,
    relay_threads,
)


def open_pty() -> tuple[int, int]:
    """A pty pair; the slave raw (no echo, no CR/LF translation) and non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    return master, slave


def wait_for(fd: int, events: int) -> None:
    p = select.poll()
    p.register(fd, events)
    assert p.poll(TIMEOUT * 1000), f"fd {fd} not ready after {TIMEOUT}s"


def read_exactly(fd: int, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = os.read(fd, n - len(data))
        except BlockingIOError:
            wait_for(fd, select.POLLIN)
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_to_eof(fd: int, chunk_size: int = 65536, pause: float = 0.0) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = os.read(fd, chunk_size)
        except BlockingIOError:
            wait_for(fd, select.POLLIN)
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if pause:
            time.sleep(pause)


def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            wait_for(fd, select.POLLOUT)


def cpu_while_idle(threads: list[threading.Thread], seconds: float) -> list[float]:
    """The CPU time each thread takes over the next `seconds`."""
    clocks = [time.pthread_getcpuclockid(t.ident) for t in threads]  # type: ignore[arg-type]
    before = [time.clock_gettime(c) for c in clocks]
    time.sleep(seconds)
    return [time.clock_gettime(c) - b for c, b in zip(clocks, before, strict=True)]


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Every relay thread gone and every fd closed again by the end of the test."""
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert relay_threads() == []
    assert set(os.listdir("/proc/self/fd")) == before


class Fifos:
    """containerd's side: the stdin and stdout fifos, and the client ends opened on them."""

    def __init__(self, tmp_path: Path) -> None:
        self.stdin = str(tmp_path / "stdin")
        self.stdout = str(tmp_path / "stdout")
        os.mkfifo(self.stdin)
        os.mkfifo(self.stdout)
        self.fds: list[int] = []

    def stdio(self) -> Stdio:
        return Stdio(stdin=self.stdin, stdout=self.stdout, terminal=True)

    def open_client(self) -> tuple[int, int]:
        """The client's stdin writer and stdout reader (after ConsoleIO holds its own ends)."""
        writer = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK)
        reader = open_fifo_reader(self.stdout)
        self.fds += [writer, reader]
        return writer, reader

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError as e:
                assert e.errno == errno.EBADF  # closed by the test on purpose


def test_console_relays_stdin_into_the_tty_and_the_tty_into_stdout(
        tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    assert sorted(t.name for t in relay_threads()) == ["relay-console-in", "relay-console-out"]
    client_in, client_out = fifos.open_client()
    try:
        os.write(client_in, b"typed by the user\n")
        assert read_exactly(slave, 18) == b"typed by the user\n"
        os.write(slave, b"printed by the process\n")
        assert read_exactly(client_out, 23) == b"printed by the process\n"
        assert max(cpu_while_idle(relay_threads(), 0.3)) < 0.005  # both wait, neither spins
    finally:
        io.close()
        os.close(slave)
        fifos.close()


def test_console_output_ends_when_the_tty_is_closed(tmp_path: Path, no_leaks: None) -> None:
    # Reading the master fails with EIO once no slave fd is left: that is EOF, not an error, and
    # what was written before still arrives.
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    _, client_out = fifos.open_client()
    try:
        os.write(slave, b"last words\n")
        os.close(slave)
        assert read_to_eof(client_out) == b"last words\n"
        io.wait(5)
    finally:
        io.close()
        fifos.close()


def test_console_output_reaches_a_reader_that_comes_after_the_tty_is_closed(
        tmp_path: Path, no_leaks: None) -> None:
    # containerd's blocking open of the stdout fifo may come late on a busy node: it must
    # still find a writer, and all that the process wrote (see test_stdio_relay's twin).
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(Stdio(stdout=fifos.stdout, terminal=True))
    io.start(master)
    os.write(slave, b"last words\n")
    os.close(slave)
    io.wait(0.5)
    reader, stuck = open_late_reader(fifos.stdout)
    try:
        data = read_to_eof(reader)
        io.wait(5)
    finally:
        io.close()
        os.close(reader)
    assert not stuck, "the reader's open(2) waited for a writer that had come and gone"
    assert data == b"last words\n"


def test_output_that_comes_after_a_first_eio_still_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may answer EIO (no slave left) while the last writes are still on their way
    to the master; they must not be lost (seen: 100 tty execs of 6.9 MB, some lost 11 KiB)."""
    import pyrunc.oci.console as console

    fifos = Fifos(tmp_path)
    # Stands in for the pty master: never readable by itself, writable (for the stdin relay).
    master, feeder = (sock.detach() for sock in socket.socketpair())
    eio = OSError(errno.EIO, "Input/output error")
    script: list[bytes | OSError] = [b"first ", eio, eio, b"late ", eio, b"later", eio]

    class ScriptedOs:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def read(fd: int, n: int) -> bytes:
            if fd != master:
                return os.read(fd, n)
            step = script.pop(0) if script else eio
            if isinstance(step, OSError):
                raise step
            return step

    monkeypatch.setattr(console, "os", ScriptedOs())

    io = ConsoleIO(fifos.stdio())
    io.start(master)
    _, client_out = fifos.open_client()
    try:
        assert read_to_eof(client_out) == b"first late later"
        started = time.monotonic()
        io.wait(5)
        assert time.monotonic() - started < 2
    finally:
        io.close()
        fifos.close()
        os.close(feeder)


def test_close_cuts_the_eio_pauses_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyrunc.oci.console as console

    monkeypatch.setattr(console, "_EIO_QUIET", 30.0)  # EIO for good: the relay would wait 30 s
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    os.close(slave)
    time.sleep(0.1)
    assert len(relay_threads()) == 2
    started = time.monotonic()
    io.close()
    assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
    assert relay_threads() == []
    fifos.close()


def test_resize_is_seen_on_the_slave(tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    try:
        io.resize(132, 43)
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8))
        )
        assert (cols, rows) == (132, 43)
    finally:
        io.close()
        os.close(slave)
        fifos.close()
    io.resize(80, 24)  # closed: a no-op, as in Go


def test_resize_function_sets_the_window_size() -> None:
    master, slave = os.openpty()
    try:
        resize(master, 100, 30)
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8)))
        assert (cols, rows) == (100, 30)
    finally:
        os.close(master)
        os.close(slave)


def test_megabytes_through_the_tty_arrive_whole_with_a_slow_reader(
        tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path)
    payload = os.urandom(8 << 20)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    _, client_out = fifos.open_client()

    def process() -> None:
        write_all(slave, payload)
        os.close(slave)

    try:
        writer = in_thread(process)
        received = read_to_eof(client_out, chunk_size=20000, pause=0.0005)
        joined(*writer)
    finally:
        io.close()
        fifos.close()
    assert len(received) == len(payload)
    assert received == payload


def test_close_stdin_hangs_up_the_tty_once_the_client_is_gone(
        tmp_path: Path, no_leaks: None) -> None:
    # As the Go shim: stdin EOF (our writer dropped by CloseIO, the client's closed) releases
    # the console, so the process sees its terminal hang up.
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    client_in, client_out = fifos.open_client()
    try:
        os.write(client_in, b"bye\n")
        assert read_exactly(slave, 4) == b"bye\n"
        os.write(slave, b"output before the hang-up\n")
        assert read_exactly(client_out, 26) == b"output before the hang-up\n"
        os.close(client_in)
        time.sleep(0.05)
        os.write(slave, b"still open\n")  # the client left, CloseIO not yet: no hang-up
        assert read_exactly(client_out, 11) == b"still open\n"
        io.close_stdin()
        started = time.monotonic()
        io.wait(5)
        assert time.monotonic() - started < 2
        assert relay_threads() == []  # both relays out: the master is closed
        assert read_to_eof(client_out) == b""
        with pytest.raises(OSError) as raised:
            os.write(slave, b"x")
        assert raised.value.errno == errno.EIO
    finally:
        io.close()
        os.close(slave)
        fifos.close()


def test_hang_up_with_containerd_not_reading_neither_spins_nor_hangs(
        tmp_path: Path, no_leaks: None) -> None:
    # stdin ends while the output relay waits for room in the stdout fifo: the hang-up's notice
    # must not keep its poll busy, and close() must still stop it.
    fifos = Fifos(tmp_path)
    master, slave = open_pty()
    io = ConsoleIO(fifos.stdio())
    io.start(master)
    client_in, _ = fifos.open_client()  # and a stdout reader that never reads
    flood = in_thread(lambda: write_all(slave, b"w" * (4 << 20)))
    time.sleep(0.2)  # the fifo is full, and so is the tty
    os.close(client_in)
    io.close_stdin()
    time.sleep(0.1)
    (out,) = [t for t in relay_threads() if t.name == "relay-console-out"]
    assert cpu_while_idle([out], 0.3) < [0.005]
    started = time.monotonic()
    io.close()
    assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
    with pytest.raises(OSError) as raised:  # the master is closed: the tty is gone
        joined(*flood)
    assert raised.value.errno == errno.EIO
    os.close(slave)  # only now: the flood may have polled it until the hang-up
    fifos.close()


def test_console_file_uri_appends_the_tty_output(tmp_path: Path, no_leaks: None) -> None:
    log_file = tmp_path / "logs" / "tty.log"
    master, slave = open_pty()
    io = ConsoleIO(Stdio(stdout=f"file://{log_file}", terminal=True))
    io.start(master)
    os.write(slave, b"to the log\n")
    os.close(slave)
    io.wait(5)
    io.close()
    assert log_file.read_bytes() == b"to the log\n"


def test_console_refuses_a_logging_binary() -> None:
    with pytest.raises(OSError, match=r"binary:///bin/logger"):
        ConsoleIO(Stdio(stdout="binary:///bin/logger", terminal=True))


def test_console_start_names_a_missing_fifo(tmp_path: Path, no_leaks: None) -> None:
    master, slave = open_pty()
    missing = str(tmp_path / "nope")
    io = ConsoleIO(Stdio(stdin=missing, stdout=missing, terminal=True))
    with pytest.raises(OSError, match="nope"):
        io.start(master)
    io.close()  # the master was handed over: close() releases it
    io.close()
    os.close(slave)
    with pytest.raises(OSError):
        os.fstat(master)


def test_console_close_before_start_is_fine() -> None:
    io = ConsoleIO(Stdio(stdout="/nonexistent", terminal=True))
    io.close()
    io.close()
    io.resize(80, 24)


# --- the console socket ---


def send_master(path: str, fd: int, name: bytes = b"/dev/pts/7") -> None:
    """What runc does: connect and send the pty's name with the master attached."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [name], [fd])


@pytest.mark.parametrize("order", ["runc first", "receive first"])
def test_console_socket_receives_a_working_master(order: str) -> None:
    master, slave = open_pty()
    with ConsoleSocket() as console_socket:
        directory = os.path.dirname(console_socket.path)
        assert len(console_socket.path.encode()) < 108
        assert console_socket.path.startswith("/tmp/")
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        if order == "runc first":  # as the Go shim: runc has returned, its message waits
            send_master(console_socket.path, master)
            received = console_socket.receive_master(5)
        else:
            receiving = in_thread(lambda: console_socket.receive_master(5))
            time.sleep(0.05)
            send_master(console_socket.path, master)
            received = joined(*receiving)  # type: ignore[assignment]
    assert isinstance(received, int)
    assert not os.path.exists(directory)
    os.close(master)  # the sender's copy, as runc closes its own
    try:
        assert not os.get_blocking(received)
        assert not os.get_inheritable(received)
        assert fcntl.fcntl(received, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        os.write(slave, b"through the received master\n")
        assert read_exactly(received, 28) == b"through the received master\n"
    finally:
        os.close(received)
        os.close(slave)


def test_console_socket_times_out_and_cleans_up() -> None:
    console_socket = ConsoleSocket()
    directory = os.path.dirname(console_socket.path)
    before = set(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        console_socket.receive_master(0.1)
    assert 0.1 <= time.monotonic() - started < 2
    # A sender that connects and never sends: the connection is closed on the timeout.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(console_socket.path)
        with pytest.raises(TimeoutError):
            console_socket.receive_master(0.2)
        conn.settimeout(5)
        assert conn.recv(1) == b""  # hung up on
    assert set(os.listdir("/proc/self/fd")) == before
    console_socket.close()
    console_socket.close()  # twice is fine
    assert not os.path.exists(directory)


def test_console_socket_sender_hanging_up_without_a_master_is_an_error() -> None:
    with ConsoleSocket() as console_socket:
        receiving = in_thread(lambda: console_socket.receive_master(5))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(console_socket.path)
            conn.sendall(b"/dev/pts/1")
        with pytest.raises(ConnectionError):
            joined(*receiving)


@pytest.mark.parametrize("waiting_for", ["a connection", "the message"])
def test_console_socket_receive_ends_when_closed_from_another_thread(waiting_for: str) -> None:
    # The caller may receive while runc runs, and give up (close the socket) if runc fails.
    before = set(os.listdir("/proc/self/fd"))
    console_socket = ConsoleSocket()
    directory = os.path.dirname(console_socket.path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        if waiting_for == "the message":
            conn.connect(console_socket.path)  # and sends nothing
        receiving = in_thread(lambda: console_socket.receive_master(30))
        time.sleep(0.1)
        assert receiving[0].is_alive()
        started = time.monotonic()
        console_socket.close()
        assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
        with pytest.raises(ConnectionAbortedError):
            joined(*receiving, timeout=1)
    assert not os.path.exists(directory)
    assert set(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ConnectionAbortedError):
        console_socket.receive_master(1)  # closed for good
