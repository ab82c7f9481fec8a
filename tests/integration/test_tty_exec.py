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


def exec_through_containerd(ctd: Containerd, id: str, process: dict[str, object], *,
                            terminal: bool, tmp_path: Path, timeout: float = 30
                            ) -> tuple[int, bytes]:
    """Exec, Start, Wait and DeleteProcess as a Go client does them; (exit status, stdout).

    Without a terminal the Go shim needs a stderr fifo as well; with one, stdout carries both."""
    with Tasks(ctd.address, ctd.namespace) as tasks:
        out = FifoReader(tmp_path / "out")
        err = None if terminal else FifoReader(tmp_path / "err")
        try:
            tasks.exec(id, "e1", process, stdout=str(out.path),
                       stderr=str(err.path) if err else "", terminal=terminal)
            tasks.call("Start", container_id=id, exec_id="e1")
            status = tasks.call("Wait", container_id=id, exec_id="e1").exit_status
            tasks.call("DeleteProcess", container_id=id, exec_id="e1")
            # Delete has answered: the shim's end of the fifo is closed, so the reader reaches
            # EOF with what the fifo received, and no more can come.
            output = out.output(timeout)
            assert out.done, "the shim kept the stdout fifo open after Delete"
            return status, output
        finally:
            out.close()
            if err:
                err.close()


@both_runtimes
def test_exec_with_terminal_only_in_the_request_gets_a_tty(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    id = unique_id("rtty")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        status, output = exec_through_containerd(
            containerd, id, process_spec("sh", "-c", "tty; exit 5", terminal=False),
            terminal=True, tmp_path=tmp_path)
    finally:
        containerd.remove(id)
    assert status == 5
    assert output.startswith(b"/dev/pts/"), output


@both_runtimes
def test_exec_without_terminal_in_the_request_gets_none(
        containerd: Containerd, runtime: str, tmp_path: Path) -> None:
    """The other way round: a spec asking for a tty, a request that does not, gives pipes."""
    id = unique_id("rnotty")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        status, output = exec_through_containerd(
            containerd, id, process_spec("tty", terminal=True), terminal=False, tmp_path=tmp_path)
    finally:
        containerd.remove(id)
    # busybox tty says "not a tty" and exits 1 when stdin is no terminal
    assert (status, output) == (1, b"not a tty\n")


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
        for n in range(EXECS_IN_A_ROW):
            (tmp_path / str(n)).mkdir()
            status, output = exec_through_containerd(
                containerd, id, process_spec("seq", "-s", " ", str(SEQ_COUNT)), terminal=True,
                tmp_path=tmp_path / str(n))
            assert status == 0, f"exec {n}"
            assert len(output) == len(expected) and output.endswith(b"999999 1000000\r\n"), (
                f"exec {n}: {len(output)} bytes, ending {output[-40:]!r}")
            assert output == expected, f"exec {n}: output differs"
    finally:
        containerd.remove(id)
