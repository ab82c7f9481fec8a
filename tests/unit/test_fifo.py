"""The framework's fifo stdio (pyrunc.shim.fifo): the order of its opens, and its errors."""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

import pytest

from pyrunc.shim.fifo import StdioError, open_stdio


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _in_thread(*paths: str) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(open_stdio(*paths)), daemon=True)
    thread.start()
    return thread, result


def test_an_output_fifo_is_opened_once_its_reader_is_there_then_held(tmp_path: Path) -> None:
    fifo = str(tmp_path / "stdout")
    os.mkfifo(fifo)
    thread, result = _in_thread("", fifo, "")
    thread.join(0.2)
    assert thread.is_alive(), "the writer's open must wait for containerd's reader"
    reader = os.open(fifo, os.O_RDONLY)  # as the client does: a blocking open
    thread.join(5)
    stdio = result[0]
    assert not thread.is_alive()
    try:
        os.write(stdio.fds[1], b"hello\n")  # type: ignore[attr-defined]
        assert os.read(reader, 100) == b"hello\n"
        os.close(reader)  # the client goes away: the holder keeps the writer from EPIPE
        assert os.write(stdio.fds[1], b"later\n") == 6  # type: ignore[attr-defined]
    finally:
        stdio.close()  # type: ignore[attr-defined]


def test_stdin_is_relayed_from_whenever_its_writer_comes_to_its_end_of_file(
        tmp_path: Path) -> None:
    fifo = str(tmp_path / "stdin")
    os.mkfifo(fifo)
    stdio = open_stdio(fifo, "", "")  # does not wait: a client may never open stdin
    try:
        ready, _, _ = select.select([stdio.fds[0]], [], [], 0.2)
        assert ready == [], "a read before the client's writer must wait, not see end of file"
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, b"input")
        os.close(writer)
        assert os.read(stdio.fds[0], 100) == b"input"
        assert os.read(stdio.fds[0], 100) == b""
    finally:
        stdio.close()


def test_no_path_is_dev_null_and_a_file_uri_appends(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"before\n")
    stdio = open_stdio("", "", f"file://{log}")
    try:
        assert os.read(stdio.fds[0], 10) == b""
        assert os.write(stdio.fds[1], b"gone") == 4
        os.write(stdio.fds[2], b"after\n")
        assert stdio.holders == ()
    finally:
        stdio.close()
    assert log.read_bytes() == b"before\nafter\n"


def test_install_makes_them_fds_0_to_2_in_a_child(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            open_stdio("", f"file://{out}", "").install()
            os.write(1, b"through fd 1\n")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_bytes() == b"through fd 1\n"


def test_a_bad_path_names_itself_in_gos_words_and_leaves_no_fd(tmp_path: Path) -> None:
    before = _fds()
    with pytest.raises(StdioError) as missing:
        open_stdio("", "", str(tmp_path / "no" / "such"))
    assert str(missing.value) == f"open {tmp_path}/no/such: no such file or directory"
    with pytest.raises(StdioError) as binary:
        open_stdio("", "binary:///bin/logger?x=1", "")
    assert str(binary.value) == ('unsupported stdio URI "binary:///bin/logger?x=1": '
                                 "only fifos and file:// logs")
    with pytest.raises(StdioError):
        open_stdio("file:///tmp/x", "", "")  # a file:// URI is for output only
    with pytest.raises(StdioError) as no_stdin:
        open_stdio(str(tmp_path / "stdin"), "", "")
    assert str(no_stdin.value) == f"open {tmp_path}/stdin: no such file or directory"
    assert _fds() == before


def test_stderr_waits_for_its_reader_too(tmp_path: Path) -> None:
    fifo = str(tmp_path / "stderr")
    os.mkfifo(fifo)
    thread, result = _in_thread("", "", fifo)
    thread.join(0.2)
    assert thread.is_alive()
    reader = os.open(fifo, os.O_RDONLY)
    thread.join(5)
    os.close(reader)
    assert len(result[0].holders) == 1  # type: ignore[attr-defined]
    result[0].close()  # type: ignore[attr-defined]


def test_stdin_is_opened_before_open_stdio_returns_so_the_process_may_chroot(
        tmp_path: Path) -> None:
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    stdio = open_stdio(str(fifo), "", "")
    try:
        moved = tmp_path / "elsewhere"
        fifo.rename(moved)  # the path no longer names it, as after a chroot
        writer = os.open(moved, os.O_WRONLY)
        os.write(writer, b"still here")
        os.close(writer)
        assert os.read(stdio.fds[0], 100) == b"still here"
    finally:
        stdio.close()
