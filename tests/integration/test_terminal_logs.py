"""Terminals (tty) and log URIs (file://, binary://), as ctr drives them."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import threading
import time
from pathlib import Path

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd
from tests.support.names import PYRUNC_RUNTIME


def ctr_in_a_terminal(ctd: Containerd, *args: str, input: bytes = b"",
                      timeout: float = 30, rows: int = 33, cols: int = 111) -> tuple[int, bytes]:
    """Run ctr with a real terminal of rows x cols as its stdio (ctr -t needs one, and passes its
    size on with ResizePty); return (status, output)."""
    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execvp(ctd.ctr_binary, ["ctr", "-a", ctd.address, "-n", ctd.namespace, *args])
    output = b""
    sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if input and not sent and output:
                os.write(master, input)
                sent = True
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output
    finally:
        os.close(master)


@both_runtimes
def test_tty_container_sees_a_terminal(containerd: Containerd, runtime: str) -> None:
    status, output = ctr_in_a_terminal(
        containerd, "run", "--rm", "-t", "--runtime", runtime, IMAGE, unique_id("tty"),
        "sh", "-c", "tty; exit 3")
    assert status == 3
    assert b"/dev/pts/" in output


@both_runtimes
def test_ctrs_terminal_size_reaches_the_container(containerd: Containerd, runtime: str) -> None:
    """ctr sends its terminal's size with ResizePty; the container's pty must have it."""
    id = unique_id("ttysize")
    sizes: list[tuple[int, int]] = []

    def read_size() -> None:
        containerd.wait_for_status(id, "RUNNING")
        init = next(t.pid for t in containerd.tasks() if t.id == id)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            fd = os.open(f"/proc/{init}/fd/0", os.O_RDONLY | os.O_NOCTTY)
            try:
                rows, cols, _, _ = struct.unpack(
                    "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            finally:
                os.close(fd)
            if (rows, cols) != (0, 0):
                sizes.append((rows, cols))
                return
            time.sleep(0.05)

    reader = threading.Thread(target=read_size)
    reader.start()
    status, _ = ctr_in_a_terminal(containerd, "run", "--rm", "-t", "--runtime", runtime, IMAGE,
                                  id, "sleep", "2", rows=33, cols=111)
    reader.join(10)
    assert status == 0
    assert sizes == [(33, 111)]


@both_runtimes
def test_large_output_through_a_tty_arrives_whole(containerd: Containerd, runtime: str) -> None:
    status, output = ctr_in_a_terminal(
        containerd, "run", "--rm", "-t", "--runtime", runtime, IMAGE, unique_id("ttybig"),
        # ctr itself stops reading the moment the task exits: give it a second to drain
        "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' y; echo; echo END; sleep 1",
        timeout=60)
    assert status == 0
    assert output.count(b"y") == 3000000
    assert b"END" in output


@both_runtimes
def test_tty_exec(containerd: Containerd, runtime: str) -> None:
    id = unique_id("ttyexec")
    containerd.ctr("run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600")
    try:
        status, output = ctr_in_a_terminal(
            containerd, "task", "exec", "-t", "--exec-id", "t1", id, "sh", "-c", "tty; exit 4")
        assert status == 4
        assert b"/dev/pts/" in output
    finally:
        containerd.remove(id)


@both_runtimes
def test_log_uri_file_appends_both_streams(containerd: Containerd, runtime: str,
                                           tmp_path: Path) -> None:
    log = tmp_path / "logs" / "container.log"
    # The Go shim now and then loses the last line when the process exits at once (its copy of
    # stderr races with closing the file); pyrunc drains both streams before it closes.
    pause = "; sleep 0.3" if runtime != PYRUNC_RUNTIME else ""
    result = containerd.ctr("run", "--rm", "--log-uri", f"file://{log}", "--runtime", runtime,
                            IMAGE, unique_id("logf"), "sh", "-c",
                            f"echo to-out; echo to-err >&2{pause}")
    assert result.returncode == 0
    deadline = time.monotonic() + 5
    while log.read_bytes().count(b"\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(log.read_bytes().splitlines()) == [b"to-err", b"to-out"]


@both_runtimes
def test_log_uri_binary_gets_the_streams_on_fds_3_and_4(containerd: Containerd, runtime: str,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    logger = tmp_path / "logger"
    logger.write_text(f"""#!/bin/sh
echo "$CONTAINER_ID $CONTAINER_NAMESPACE $*" > {out}.args
cat <&3 > {out}.stdout &
cat <&4 > {out}.stderr &
echo ready >&5
exec 5>&-
wait
""")
    logger.chmod(0o755)
    id = unique_id("logb")
    result = containerd.ctr("run", "--rm", "--log-uri", f"binary://{logger}?tag=one",
                            "--runtime", runtime, IMAGE, id,
                            "sh", "-c", "echo to-out; echo to-err >&2")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while not (out.with_suffix(".stderr").exists()
               and out.with_suffix(".stderr").read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(f"{out}.stdout").read_bytes() == b"to-out\n"
    assert Path(f"{out}.stderr").read_bytes() == b"to-err\n"
    assert Path(f"{out}.args").read_text().split() == [id, containerd.namespace, "tag", "one"]
