"""The relay between pipes and fifos: whole data, EOF, full destinations; and PipeIO's relay
threads: stopping on close() whatever they are blocked on, idling without CPU, leaving nothing
behind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrunc.oci.stdio import PipeIO, Stdio, Wakeup, relay
from tests.unit.threads import in_thread, joined, open_fifo_reader, open_late_reader, relay_threads


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Every relay thread gone and every fd closed again by the end of the test."""
    before = open_fds()
    yield
    assert relay_threads() == []
    assert open_fds() == before


def test_relay_moves_everything_through_a_slow_reader() -> None:
    src_r, src_w = os.pipe2(os.O_NONBLOCK)
    dst_r, dst_w = os.pipe2(os.O_NONBLOCK)
    payload = os.urandom(3 << 20)
    received = bytearray()

    def write_all() -> None:
        os.set_blocking(src_w, True)
        view = memoryview(payload)
        while view:
            view = view[os.write(src_w, view[:65536]):]
        os.close(src_w)

    def read_all() -> None:  # slower than the writer: the relay must wait for room
        os.set_blocking(dst_r, True)
        while chunk := os.read(dst_r, 20000):
            received.extend(chunk)
            time.sleep(0.0001)

    def relay_and_close() -> int:
        try:
            return relay(src_r, dst_w)
        finally:
            os.close(dst_w)  # EOF for the reader

    writer = in_thread(write_all)
    reader = in_thread(read_all)
    total = joined(*in_thread(relay_and_close))
    joined(*writer)
    joined(*reader)
    os.close(src_r)
    os.close(dst_r)
    assert total == len(payload) == 3 << 20
    assert received == payload


def test_relay_into_a_regular_file(tmp_path: Path) -> None:
    src_r, src_w = os.pipe2(os.O_NONBLOCK)
    target = tmp_path / "out"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # splice refuses O_APPEND
    os.write(src_w, b"first\n")
    os.close(src_w)
    assert joined(*in_thread(lambda: relay(src_r, fd))) == 6
    os.close(fd)
    os.close(src_r)
    assert target.read_bytes() == b"first\n"


@pytest.mark.parametrize("blocked_on", ["empty source", "full destination"])
def test_relay_stops_when_woken_whatever_it_waits_for(blocked_on: str) -> None:
    src_r, src_w = os.pipe2(os.O_NONBLOCK)
    dst_r, dst_w = os.pipe2(os.O_NONBLOCK)
    wakeup = Wakeup()
    if blocked_on == "full destination":
        while True:  # fill dst, then give the relay more to move
            try:
                os.write(dst_w, b"x" * 65536)
            except BlockingIOError:
                break
        os.write(src_w, b"more")
    thread, result = in_thread(lambda: relay(src_r, dst_w, wakeup))
    time.sleep(0.1)
    assert thread.is_alive()
    started = time.monotonic()
    wakeup.set()
    assert joined(thread, result, 2) == 0
    assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
    for fd in (src_r, src_w, dst_r, dst_w):
        os.close(fd)
    wakeup.close()


# --- PipeIO ---


class Fifos:
    """containerd's side: the fifos, which ctr would open and read."""

    def __init__(self, tmp_path: Path, *names: str) -> None:
        self.paths = {name: str(tmp_path / name) for name in names}
        for path in self.paths.values():
            os.mkfifo(path)

    def stdio(self) -> Stdio:
        get = self.paths.get
        return Stdio(get("stdin", ""), get("stdout", ""), get("stderr", ""))

    def reader(self, name: str) -> int:
        return open_fifo_reader(self.paths[name])


def started_stdout_only(tmp_path: Path) -> tuple[Fifos, PipeIO, int]:
    """A PipeIO relaying stdout only, started as after `runc create`; the process's end of the
    pipe (the caller closes it)."""
    fifos = Fifos(tmp_path, "stdout")
    io = PipeIO(fifos.stdio())
    proc_out = os.dup(io.runc_stdio()[1])  # type: ignore[arg-type]
    io.close_runc_side()
    io.start()
    return fifos, io, proc_out


def read_until(fd: int, n: int, timeout: float = 10) -> bytes:
    """Read from a non-blocking fd until n bytes (or EOF) came."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < n and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, n - len(data))
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_pipe_io_relays_all_three_streams_and_drains(tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path, "stdin", "stdout", "stderr")
    io = PipeIO(fifos.stdio())
    proc_in, proc_out, proc_err = (os.dup(fd) for fd in io.runc_stdio())  # type: ignore[arg-type]
    io.close_runc_side()
    io.start()
    assert sorted(t.name for t in relay_threads()) == ["relay-stderr", "relay-stdin",
                                                       "relay-stdout"]
    assert all(t.daemon for t in relay_threads())
    client_in = os.open(fifos.paths["stdin"], os.O_WRONLY)
    out, err = fifos.reader("stdout"), fifos.reader("stderr")
    os.write(client_in, b"typed\n")
    assert read_until(proc_in, 6) == b"typed\n"
    os.write(proc_out, b"out\n")
    os.write(proc_err, b"err\n")
    assert read_until(out, 4) == b"out\n"
    assert read_until(err, 4) == b"err\n"
    os.close(client_in)  # the client leaves; CloseIO not yet: no EOF for the process
    time.sleep(0.05)
    os.set_blocking(proc_in, False)
    with pytest.raises(BlockingIOError):
        os.read(proc_in, 1)
    io.close_stdin()
    assert read_until(proc_in, 1) == b""  # now EOF
    os.close(proc_out)  # the process exits
    os.close(proc_err)
    started = time.monotonic()
    io.wait(5)
    assert time.monotonic() - started < 2
    assert read_until(out, 1) == b"" and read_until(err, 1) == b""  # EOF for containerd
    io.close()
    io.close()  # twice is fine
    for fd in (proc_in, out, err):
        os.close(fd)


def test_output_reaches_a_reader_that_comes_after_the_process_is_gone(
        tmp_path: Path, no_leaks: None) -> None:
    # On a busy node containerd's (blocking) open of the stdout fifo may come only after a
    # short-lived process has written, exited and its relay seen EOF. A writer opened before
    # that reader and closed again leaves its open(2) waiting for a writer for good, and the
    # output is lost when Delete closes the shim's ends (ctr then prints nothing).
    fifos, io, proc_out = started_stdout_only(tmp_path)
    os.write(proc_out, b"early\n")
    os.close(proc_out)  # the process exits before anyone reads
    io.wait(0.3)
    path = fifos.paths["stdout"]
    reader, stuck = open_late_reader(path)
    data = read_until(reader, 100)  # to EOF
    io.wait(5)
    io.close()
    os.close(reader)
    assert not stuck, "the reader's open(2) waited for a writer that had come and gone"
    assert data == b"early\n"


def test_wait_gives_up_after_its_timeout_while_the_process_runs(
        tmp_path: Path, no_leaks: None) -> None:
    _, io, proc_out = started_stdout_only(tmp_path)
    started = time.monotonic()
    io.wait(0.2)
    assert 0.2 <= time.monotonic() - started < 2
    io.close()
    os.close(proc_out)


@pytest.mark.parametrize("blocked_on", ["a running process", "containerd not reading"])
def test_close_stops_the_relays_promptly(
        tmp_path: Path, no_leaks: None, blocked_on: str) -> None:
    fifos = Fifos(tmp_path, "stdin", "stdout", "stderr")
    io = PipeIO(fifos.stdio())
    proc = [os.dup(fd) for fd in io.runc_stdio()]  # type: ignore[arg-type]
    io.close_runc_side()
    io.start()
    if blocked_on == "containerd not reading":
        # More than the stdout fifo holds: its relay ends up waiting for room.
        os.set_blocking(proc[1], False)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(proc[1], b"y" * 65536)
    time.sleep(0.1)
    assert len(relay_threads()) == 3
    started = time.monotonic()
    io.close()
    assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
    for fd in proc:
        os.close(fd)


def test_close_stops_a_relay_that_never_waits(tmp_path: Path, no_leaks: None) -> None:
    # A process writing without a pause to a fast reader: the relay never blocks, and must
    # still notice close() between two transfers.
    fifos, io, proc_out = started_stdout_only(tmp_path)
    out = fifos.reader("stdout")
    stop = threading.Event()

    def produce() -> None:
        chunk = b"z" * 65536
        with pytest.raises(BrokenPipeError):  # our copy of the pipe's reader closed
            while True:  # (not until `stop`: close() and stop.set() may both come between writes)
                os.write(proc_out, chunk)

    def consume() -> None:
        while not stop.is_set():
            try:
                if not os.read(out, 1 << 20):
                    return
            except BlockingIOError:
                time.sleep(0)

    producer, consumer = in_thread(produce), in_thread(consume)
    time.sleep(0.2)
    started = time.monotonic()
    io.close()
    assert time.monotonic() - started < 2  # promptly: without a wakeup it would never return
    stop.set()
    joined(*producer)
    joined(*consumer)
    os.close(proc_out)
    os.close(out)


def test_idle_relays_take_no_cpu(tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path, "stdin", "stdout", "stderr")
    io = PipeIO(fifos.stdio())
    proc = [os.dup(fd) for fd in io.runc_stdio()]  # type: ignore[arg-type]
    io.close_runc_side()
    io.start()
    out = fifos.reader("stdout")  # containerd reading, the process quiet
    os.write(proc[1], b"once\n")
    assert read_until(out, 5) == b"once\n"
    clocks = [time.pthread_getcpuclockid(t.ident) for t in relay_threads()  # type: ignore[arg-type]
              ]
    before = [time.clock_gettime(c) for c in clocks]
    time.sleep(0.5)
    used = [time.clock_gettime(c) - b for c, b in zip(clocks, before, strict=True)]
    assert max(used) < 0.005, used
    io.close()
    for fd in [*proc, out]:
        os.close(fd)


def test_close_is_safe_in_every_state(tmp_path: Path, no_leaks: None) -> None:
    fifos = Fifos(tmp_path, "stdin", "stdout")
    before_start = PipeIO(fifos.stdio())
    before_start.close()  # runc's side still held: closed too
    before_start.close()

    failed = PipeIO(Stdio(stdin=fifos.paths["stdin"], stdout=str(tmp_path / "missing")))
    failed.close_runc_side()
    with pytest.raises(OSError, match=r"open .*missing: no such file"):
        failed.start()  # the stdin relay was already running
    failed.close()
    failed.close()


def test_io_uid_and_gid_own_the_pipes(tmp_path: Path, no_leaks: None) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    io = PipeIO(Stdio(stdin="x", stdout="y"), 1234, 5678)
    assert io.runc_stdio()[2] is None  # no stderr asked for
    for fd in io.runc_stdio()[:2]:
        assert fd is not None
        st = os.fstat(fd)
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    io.close()
