"""Terminals (tty) and log URIs (file://, binary://), as ctr drives them."""

from __future__ import annotations

import os
import pty
import select
import time
from pathlib import Path

from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd


def ctr_in_a_terminal(ctd: Containerd, *args: str, input: bytes = b"",
                      timeout: float = 30) -> tuple[int, bytes]:
    """Run ctr with a real terminal as its stdio (ctr -t needs one); return (status, output)."""
    pid, master = pty.fork()
    if pid == 0:
        os.execvp("ctr", ["ctr", "-a", ctd.address, "-n", ctd.namespace, *args])
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
        "sh", "-c", "tty; stty size; exit 3")
    assert status == 3
    assert b"/dev/pts/" in output


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
    result = containerd.ctr("run", "--rm", "--log-uri", f"file://{log}", "--runtime", runtime,
                            IMAGE, unique_id("logf"), "sh", "-c", "echo to-out; echo to-err >&2")
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
