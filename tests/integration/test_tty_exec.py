"""Exec with a terminal the way containerd's Go client asks for one: in the request only.

`task.Exec(ctx, id, spec, cio.NewCreator(..., cio.WithTerminal))` sends
ExecProcessRequest.terminal = true with a process spec whose `terminal` is false; the shim must
make the request's choice the spec's (as the Go shim does), or runc refuses the console socket.
These tests call containerd's own Tasks API (tests/support/tasks_api.py), which hands the request
to the shim unchanged.
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.tasks_api import Tasks

SEQ_COUNT = 1_000_000
SEQ_OUTPUT = " ".join(str(n) for n in range(1, SEQ_COUNT + 1)).encode()  # about 6.9 MB
EXECS_IN_A_ROW = 100


def process_spec(*args: str, terminal: bool = False) -> dict[str, object]:
    return {
        "args": list(args), "cwd": "/", "env": ["PATH=/bin:/sbin:/usr/bin"],
        "user": {"uid": 0, "gid": 0}, "terminal": terminal,
    }


class FifoReader:
    """The client's end of a stdout fifo, read to EOF on a thread of its own (as cio does)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        # O_RDWR would never see EOF; open for reading without blocking, then block on reads.
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(self._fd, True)
        self.chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # Until the shim opens its end, poll() waits (a fifo that never had a writer reports no
        # hang-up); after it has written and closed its end, a read returns b"": EOF.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        seen_data = False
        try:
            while True:
                if not poller.poll(100):
                    continue
                data = os.read(self._fd, 1 << 20)
                if data:
                    seen_data = True
                    self.chunks.append(data)
                elif seen_data:
                    return
                else:
                    time.sleep(0.01)  # opened and closed without a byte: keep waiting
        except OSError:
            return  # closed under us by close()

    def output(self, timeout: float) -> bytes:
        self._thread.join(timeout)
        return b"".join(self.chunks)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def close(self) -> None:
        os.close(self._fd)


@both_runtimes
def test_exec_with_terminal_only_in_the_request_gets_a_tty(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    id = unique_id("rtty")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        with Tasks(containerd.address, containerd.namespace) as tasks:
            reader = FifoReader(tmp_path / "out")
            try:
                tasks.exec(id, "e1", process_spec("sh", "-c", "tty; exit 5", terminal=False),
                           stdout=str(reader.path), terminal=True)
                tasks.call("Start", container_id=id, exec_id="e1")
                assert tasks.call("Wait", container_id=id, exec_id="e1").exit_status == 5
                tasks.call("DeleteProcess", container_id=id, exec_id="e1")
                output = reader.output(timeout=10)
            finally:
                reader.close()
        assert output.startswith(b"/dev/pts/"), output
    finally:
        containerd.remove(id)


@both_runtimes
def test_exec_without_terminal_in_the_request_gets_none(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    """The other way round: a spec asking for a tty, a request that does not, gives pipes."""
    id = unique_id("rnotty")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        with Tasks(containerd.address, containerd.namespace) as tasks:
            reader, errors = FifoReader(tmp_path / "out"), FifoReader(tmp_path / "err")
            try:
                tasks.exec(id, "e1", process_spec("tty", terminal=True),
                           stdout=str(reader.path), stderr=str(errors.path), terminal=False)
                tasks.call("Start", container_id=id, exec_id="e1")
                # busybox tty says "not a tty" and exits 1 when stdin is no terminal
                assert tasks.call("Wait", container_id=id, exec_id="e1").exit_status == 1
                tasks.call("DeleteProcess", container_id=id, exec_id="e1")
                output = reader.output(timeout=10)
            finally:
                reader.close()
                errors.close()
        assert output == b"not a tty\n", output
    finally:
        containerd.remove(id)


def test_hundred_tty_execs_each_deliver_all_their_output_by_delete(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    """100 execs in a row over a tty, each ~6.9 MB: by the time Wait has returned the exit and
    Delete has answered, the fifo has received the whole output (the shim closes its end only
    after the last byte, so EOF right after Delete means nothing was cut)."""
    id = unique_id("tty100")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    # A tty turns the final newline into CRLF.
    expected = SEQ_OUTPUT + b"\r\n"
    try:
        with Tasks(containerd.address, containerd.namespace) as tasks:
            for n in range(EXECS_IN_A_ROW):
                exec_id = f"seq{n}"
                reader = FifoReader(tmp_path / f"out{n}")
                try:
                    tasks.exec(id, exec_id, process_spec("seq", "-s", " ", str(SEQ_COUNT)),
                               stdout=str(reader.path), terminal=True)
                    tasks.call("Start", container_id=id, exec_id=exec_id)
                    assert tasks.call("Wait", container_id=id, exec_id=exec_id).exit_status == 0
                    tasks.call("DeleteProcess", container_id=id, exec_id=exec_id)
                    # Delete has answered: the shim's end of the fifo is closed, so the reader
                    # reaches EOF with what the fifo received, and no more can come.
                    output = reader.output(timeout=30)
                    assert reader.done, f"exec {n}: the shim kept the stdout fifo open"
                finally:
                    reader.close()
                assert len(output) == len(expected) and output.endswith(b"999999 1000000\r\n"), (
                    f"exec {n}: {len(output)} bytes, ending {output[-40:]!r}")
                assert output == expected, f"exec {n}: output differs"
    finally:
        containerd.remove(id)
