"""Terminals: the console socket runc sends the pty master over, and the relay between the master
and containerd's fifos, driven against a real pty pair and real fifos."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import stat
import struct
import termios
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pyrunc.oci.console import ConsoleIO, ConsoleSocket, resize
from pyrunc.oci.stdio import FdWaiter, Stdio

TIMEOUT = 30


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), TIMEOUT)

    asyncio.run(bounded())


def open_pty() -> tuple[int, int]:
    """A pty pair; the slave raw (no echo, no CR/LF translation) and non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    return master, slave


async def read_exactly(fd: int, n: int) -> bytes:
    data = bytearray()
    waiter = FdWaiter(fd, writable=False)
    while len(data) < n:
        try:
            chunk = os.read(fd, n - len(data))
        except BlockingIOError:
            await waiter.wait()
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def read_to_eof(fd: int, chunk_size: int = 65536, pause: float = 0.0) -> bytes:
    data = bytearray()
    waiter = FdWaiter(fd, writable=False)
    while True:
        try:
            chunk = os.read(fd, chunk_size)
        except BlockingIOError:
            await waiter.wait()
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if pause:
            await asyncio.sleep(pause)


async def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    waiter = FdWaiter(fd, writable=True)
    while view:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            await waiter.wait()


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
        reader = os.open(self.stdout, os.O_RDONLY | os.O_NONBLOCK)
        self.fds += [writer, reader]
        return writer, reader

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError as e:
                assert e.errno == errno.EBADF  # closed by the test on purpose


def test_console_relays_stdin_into_the_tty_and_the_tty_into_stdout(tmp_path: Path) -> None:
    fifos = Fifos(tmp_path)

    async def scenario() -> None:
        master, slave = open_pty()
        io = ConsoleIO(fifos.stdio())
        io.start(master)
        client_in, client_out = fifos.open_client()
        try:
            os.write(client_in, b"typed by the user\n")
            assert await read_exactly(slave, 18) == b"typed by the user\n"
            os.write(slave, b"printed by the process\n")
            assert await read_exactly(client_out, 23) == b"printed by the process\n"
        finally:
            await io.aclose()
            os.close(slave)
            fifos.close()

    run(scenario)


def test_console_output_ends_when_the_tty_is_closed(tmp_path: Path) -> None:
    # Reading the master fails with EIO once no slave fd is left: that is EOF, not an error, and
    # what was written before still arrives.
    fifos = Fifos(tmp_path)

    async def scenario() -> None:
        master, slave = open_pty()
        io = ConsoleIO(fifos.stdio())
        io.start(master)
        _, client_out = fifos.open_client()
        try:
            os.write(slave, b"last words\n")
            os.close(slave)
            assert await read_to_eof(client_out) == b"last words\n"
            await io.wait(5)
        finally:
            await io.aclose()
            fifos.close()

    run(scenario)


def test_output_that_comes_after_a_first_eio_still_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may answer EIO (no slave left) while the last writes are still on their way
    to the master; they must not be lost (seen: 100 tty execs of 6.9 MB, some lost 11 KiB)."""
    import pyrunc.oci.console as console

    fifos = Fifos(tmp_path)
    master, feeder = os.pipe()  # stands in for the pty master: readable when the script has more
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

    async def scenario() -> None:
        io = ConsoleIO(fifos.stdio())
        io.start(master)
        _, client_out = fifos.open_client()
        try:
            assert await read_to_eof(client_out) == b"first late later"
            await io.wait(5)
        finally:
            await io.aclose()
            fifos.close()
            os.close(feeder)

    run(scenario)


def test_resize_is_seen_on_the_slave(tmp_path: Path) -> None:
    fifos = Fifos(tmp_path)

    async def scenario() -> None:
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
            await io.aclose()
            os.close(slave)
            fifos.close()
        io.resize(80, 24)  # closed: a no-op, as in Go

    run(scenario)


def test_resize_function_sets_the_window_size() -> None:
    master, slave = os.openpty()
    try:
        resize(master, 100, 30)
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8)))
        assert (cols, rows) == (100, 30)
    finally:
        os.close(master)
        os.close(slave)


def test_megabytes_through_the_tty_arrive_whole_with_a_slow_reader(tmp_path: Path) -> None:
    fifos = Fifos(tmp_path)
    payload = os.urandom(8 << 20)

    async def scenario() -> bytes:
        master, slave = open_pty()
        io = ConsoleIO(fifos.stdio())
        io.start(master)
        _, client_out = fifos.open_client()

        async def process() -> None:
            await write_all(slave, payload)
            os.close(slave)

        try:
            _, received = await asyncio.gather(
                process(), read_to_eof(client_out, chunk_size=20000, pause=0.0005)
            )
            return received
        finally:
            await io.aclose()
            fifos.close()

    received = b""

    async def check() -> None:
        nonlocal received
        received = await scenario()

    run(check)
    assert len(received) == len(payload)
    assert received == payload


def test_close_stdin_hangs_up_the_tty_once_the_client_is_gone(tmp_path: Path) -> None:
    # As the Go shim: stdin EOF (our writer dropped by CloseIO, the client's closed) releases
    # the console, so the process sees its terminal hang up.
    fifos = Fifos(tmp_path)

    async def scenario() -> None:
        master, slave = open_pty()
        io = ConsoleIO(fifos.stdio())
        io.start(master)
        client_in, client_out = fifos.open_client()
        try:
            os.write(client_in, b"bye\n")
            assert await read_exactly(slave, 4) == b"bye\n"
            os.write(slave, b"output before the hang-up\n")
            assert await read_exactly(client_out, 26) == b"output before the hang-up\n"
            os.close(client_in)
            await asyncio.sleep(0.05)
            os.write(slave, b"still open\n")  # the client left, CloseIO not yet: no hang-up
            assert await read_exactly(client_out, 11) == b"still open\n"
            io.close_stdin()
            await io.wait(5)
            assert await read_to_eof(client_out) == b""
            with pytest.raises(OSError) as raised:
                os.write(slave, b"x")
            assert raised.value.errno == errno.EIO
        finally:
            await io.aclose()
            os.close(slave)
            fifos.close()

    run(scenario)


def test_console_file_uri_appends_the_tty_output(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "tty.log"

    async def scenario() -> None:
        master, slave = open_pty()
        io = ConsoleIO(Stdio(stdout=f"file://{log_file}", terminal=True))
        io.start(master)
        os.write(slave, b"to the log\n")
        os.close(slave)
        await io.wait(5)
        await io.aclose()

    run(scenario)
    assert log_file.read_bytes() == b"to the log\n"


def test_console_refuses_a_logging_binary() -> None:
    with pytest.raises(OSError, match=r"binary:///bin/logger"):
        ConsoleIO(Stdio(stdout="binary:///bin/logger", terminal=True))


def test_console_start_names_a_missing_fifo(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, slave = open_pty()
        missing = str(tmp_path / "nope")
        io = ConsoleIO(Stdio(stdin=missing, stdout=missing, terminal=True))
        with pytest.raises(OSError, match="nope"):
            io.start(master)
        io.close()  # the master was handed over: close() releases it
        os.close(slave)
        with pytest.raises(OSError):
            os.fstat(master)

    run(scenario)


# --- the console socket ---


async def send_master(path: str, fd: int, name: bytes = b"/dev/pts/7") -> None:
    """What runc does: connect and send the pty's name with the master attached."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.setblocking(False)
        await loop.sock_connect(conn, path)
        socket.send_fds(conn, [name], [fd])


def test_console_socket_receives_a_working_master() -> None:
    async def scenario() -> None:
        master, slave = open_pty()
        with ConsoleSocket() as console_socket:
            directory = os.path.dirname(console_socket.path)
            assert len(console_socket.path.encode()) < 108
            assert console_socket.path.startswith("/tmp/")
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            receiving = asyncio.create_task(console_socket.receive_master(5))
            await send_master(console_socket.path, master)
            received = await receiving
        assert not os.path.exists(directory)
        os.close(master)  # the sender's copy, as runc closes its own
        try:
            assert not os.get_blocking(received)
            assert not os.get_inheritable(received)
            assert fcntl.fcntl(received, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            os.write(slave, b"through the received master\n")
            assert await read_exactly(received, 28) == b"through the received master\n"
        finally:
            os.close(received)
            os.close(slave)

    run(scenario)


def test_console_socket_times_out_and_cleans_up() -> None:
    async def scenario() -> None:
        console_socket = ConsoleSocket()
        directory = os.path.dirname(console_socket.path)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(TimeoutError):
            await console_socket.receive_master(0.1)
        # A sender that connects and never sends: the connection is closed on the timeout.
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.setblocking(False)
            await loop.sock_connect(conn, console_socket.path)
            with pytest.raises(TimeoutError):
                await console_socket.receive_master(0.2)
            assert await loop.sock_recv(conn, 1) == b""  # hung up on
        assert set(os.listdir("/proc/self/fd")) == before
        console_socket.close()
        console_socket.close()  # twice is fine
        assert not os.path.exists(directory)

    run(scenario)


def test_console_socket_sender_hanging_up_without_a_master_is_an_error() -> None:
    async def scenario() -> None:
        with ConsoleSocket() as console_socket:
            receiving = asyncio.create_task(console_socket.receive_master(5))
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.setblocking(False)
                await loop.sock_connect(conn, console_socket.path)
                await loop.sock_sendall(conn, b"/dev/pts/1")
            with pytest.raises(ConnectionError):
                await receiving

    run(scenario)


def test_console_socket_receive_can_be_cancelled() -> None:
    # The caller starts receive_master before runc and cancels it if runc fails.
    async def scenario() -> None:
        with ConsoleSocket() as console_socket:
            receiving = asyncio.create_task(console_socket.receive_master(5))
            await asyncio.sleep(0.01)
            receiving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiving

    run(scenario)
