"""The stdout URIs of Go's createIO: fifo paths, file:// logs and binary:// logging binaries.

Logging binaries are started through a ProcessMonitor; SpawnMonitor below is a minimal one for
these tests (shim/spawn.py's posix_spawn, and a thread per child in waitpid), so nothing here
needs the shim's reaper.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pyrunc.oci.stdio import (
    BINARY,
    BINARY_V2,
    FIFO,
    FILE,
    PipeIO,
    Stdio,
    StdoutURI,
    parse_stdout_uri,
)
from pyrunc.shim.reaper import Exit, ExitWatch
from pyrunc.shim.spawn import exit_status, spawn


class SpawnMonitor:
    """A ProcessMonitor for tests: shim/spawn.py's spawn, then a thread per child blocked in
    waitpid(pid) that sets its watch. Every spawn is remembered so tests can wait for the
    exit."""

    def __init__(self) -> None:
        self.spawned: list[tuple[list[str], Mapping[str, str] | None, ExitWatch]] = []

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        extra_fds: Sequence[int] = (),
    ) -> tuple[int, ExitWatch]:
        pid = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                    extra_fds=extra_fds)
        watch = ExitWatch(pid)

        def reap() -> None:
            _, status = os.waitpid(pid, 0)
            watch.set(Exit(pid, exit_status(status), time.time_ns()))

        threading.Thread(target=reap, name=f"reap-{pid}", daemon=True).start()
        self.spawned.append((list(argv), env, watch))
        return pid, watch

    def watch(self, pid: int, since_ns: int = 0) -> ExitWatch:
        raise NotImplementedError


def exited(watch: ExitWatch, timeout: float = 10) -> Exit:
    exit = watch.wait(timeout)
    assert exit is not None, "the logger did not exit"
    return exit


def write_logger(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "logger.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


# --- parsing ---


def test_a_plain_path_is_a_fifo() -> None:
    assert parse_stdout_uri("/run/containerd/fifo/1/ctr-stdout") == StdoutURI(
        FIFO, "/run/containerd/fifo/1/ctr-stdout"
    )
    assert parse_stdout_uri("") == StdoutURI(FIFO, "")
    # As Go, which keeps the raw value for a scheme-less fifo: '?' is part of the path.
    assert parse_stdout_uri("/tmp/odd?name").path == "/tmp/odd?name"


def test_fifo_scheme_names_the_fifo_path() -> None:
    assert parse_stdout_uri("fifo:///run/x/stdout") == StdoutURI(FIFO, "/run/x/stdout")


def test_file_uri_names_the_log_file() -> None:
    assert parse_stdout_uri("file:///var/log/ctr%20a.log") == StdoutURI(
        FILE, "/var/log/ctr a.log"
    )


def test_binary_uri_gives_args_in_query_order_and_env_from_env_keys() -> None:
    uri = parse_stdout_uri("binary:///usr/bin/logger?--tag=web&-v&env.LEVEL=debug&--tag=other")
    assert uri.scheme == BINARY and uri.is_binary
    assert uri.path == "/usr/bin/logger"
    assert uri.args == ("--tag", "web", "-v", "")  # first value of a key only, as Go
    assert dict(uri.env) == {"LEVEL": "debug"}
    assert parse_stdout_uri("binary-v2:///usr/bin/logger").scheme == BINARY_V2


@pytest.mark.parametrize(
    "value",
    [
        "file://var/log/x.log",  # a host, not a path: Go would write to /log/x.log
        "file:relative.log",
        "binary://logger",
        "binary:relative/logger",
        "tcp://127.0.0.1:514",
        "syslog:local0",
    ],
)
def test_bad_uris_are_refused_naming_the_uri(value: str) -> None:
    with pytest.raises(ValueError, match=value.replace("?", r"\?")):
        parse_stdout_uri(value)
    with pytest.raises(OSError, match=value.replace("?", r"\?")):
        PipeIO(Stdio(stdout=value), monitor=SpawnMonitor())


def test_a_logging_binary_needs_a_monitor() -> None:
    with pytest.raises(OSError, match="monitor"):
        PipeIO(Stdio(stdout="binary:///bin/logger"))


# --- file:// ---


class Container:
    """runc's part: take the process's ends of the pipes, let PipeIO close its copies."""

    def __init__(self, io: PipeIO) -> None:
        self.fds = [None if fd is None else os.dup(fd) for fd in io.runc_stdio()]
        io.close_runc_side()

    def write(self, index: int, data: bytes) -> None:
        fd = self.fds[index]
        assert fd is not None
        os.write(fd, data)

    def exit(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = [None, None, None]


def test_file_uri_appends_both_streams_creating_file_and_directory(tmp_path: Path) -> None:
    log_file = tmp_path / "new" / "dir" / "ctr.log"
    uri = f"file://{log_file}"

    io = PipeIO(Stdio(stdout=uri, stderr=uri))
    container = Container(io)
    io.start()
    container.write(1, b"out 1\n")
    time.sleep(0.05)
    container.write(2, b"err 1\n")
    time.sleep(0.05)
    container.write(1, b"out 2\n")
    container.exit()
    io.wait(5)
    io.close()

    assert log_file.read_bytes() == b"out 1\nerr 1\nout 2\n"
    assert log_file.stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert log_file.parent.stat().st_mode & 0o777 == 0o755 & ~_umask()


def test_file_uri_appends_to_an_existing_log(tmp_path: Path) -> None:
    log_file = tmp_path / "ctr.log"
    log_file.write_bytes(b"earlier run\n")

    io = PipeIO(Stdio(stdout=f"file://{log_file}", stderr=f"file://{log_file}"))
    container = Container(io)
    io.start()
    container.write(2, b"later run\n")
    container.exit()
    io.wait(5)
    io.close()

    assert log_file.read_bytes() == b"earlier run\nlater run\n"


def test_file_uri_that_cannot_be_created_says_why_as_go_does(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    uri = f"file://{blocker}/ctr.log"  # a directory that is a file

    io = PipeIO(Stdio(stdout=uri))
    Container(io).exit()
    with pytest.raises(OSError) as failed:
        io.start()
    assert str(failed.value) == f"mkdir {blocker}: not a directory"  # Go's MkdirAll
    io.close()


# --- binary:// ---

TEE_LOGGER = """\
cat <&3 > "$2.out" &
cat <&4 > "$2.err" &
echo "$CONTAINER_ID $CONTAINER_NAMESPACE $LEVEL ${HOME:-nohome}" > "$2.env"
echo ok >&5
exec 5>&-
wait
"""


def test_binary_uri_starts_the_logger_with_both_streams(tmp_path: Path) -> None:
    logger = write_logger(tmp_path, TEE_LOGGER)
    prefix = tmp_path / "captured"
    uri = f"binary://{logger}?--prefix={prefix}&env.LEVEL=debug"
    monitor = SpawnMonitor()
    before = open_fds()

    io = PipeIO(
        Stdio(stdin=str(tmp_path / "unused-stdin"), stdout=uri, stderr=""),
        monitor=monitor, container_id="web-1", namespace="k8s.io",
    )
    assert io.runc_stdio()[0] is None  # no stdin with a logging binary, as in Go
    assert io.runc_stdio()[2] is not None  # stderr goes to the logger all the same
    container = Container(io)
    io.start()  # blocks until the logger is ready
    assert (tmp_path / "captured.env").exists()  # ready means the logger ran
    argv, env, logger_exit = monitor.spawned[0]
    assert argv == [str(logger), "--prefix", str(prefix)]
    assert env == {"LEVEL": "debug", "CONTAINER_ID": "web-1", "CONTAINER_NAMESPACE": "k8s.io"}
    container.write(1, b"to stdout\n")
    container.write(2, b"to stderr\n")
    container.exit()
    # The pipes closed (the process is gone): the logger exits by itself, and wait() sees it.
    io.wait(10)
    assert exited(logger_exit, 0).status == 0
    io.close()
    assert open_fds() == before

    assert (tmp_path / "captured.out").read_bytes() == b"to stdout\n"
    assert (tmp_path / "captured.err").read_bytes() == b"to stderr\n"
    assert (tmp_path / "captured.env").read_text() == "web-1 k8s.io debug nohome\n"


def test_binary_logger_that_never_gets_ready_is_killed(tmp_path: Path) -> None:
    logger = write_logger(tmp_path, "exec sleep 100\n")  # keeps fd 5 open, writes nothing
    monitor = SpawnMonitor()

    io = PipeIO(Stdio(stdout=f"binary://{logger}"), monitor=monitor)
    Container(io).exit()
    started = time.monotonic()
    with pytest.raises(OSError, match=f"binary://{logger}.*not ready"):
        io.start(ready_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert exited(monitor.spawned[0][2]).status == 128 + signal.SIGKILL
    io.close()


def test_binary_logger_closing_fd5_is_ready_but_binary_v2_wants_a_byte(tmp_path: Path) -> None:
    logger = write_logger(tmp_path, "exit 0\n")

    io = PipeIO(Stdio(stdout=f"binary://{logger}"), monitor=SpawnMonitor())
    Container(io).exit()
    io.start()  # EOF on fd 5 counts, as in Go
    io.close()

    strict = PipeIO(Stdio(stdout=f"binary-v2://{logger}"), monitor=SpawnMonitor())
    Container(strict).exit()
    with pytest.raises(OSError, match="without calling ready"):
        strict.start()
    strict.close()


def test_binary_logger_that_cannot_start_is_named_as_go_does(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-logger"

    io = PipeIO(Stdio(stdout=f"binary://{missing}"), monitor=SpawnMonitor())
    Container(io).exit()
    with pytest.raises(OSError) as failed:
        io.start()
    assert str(failed.value) == (  # the Go shim's NewBinaryIO, and os/exec under it
        f"failed to start binary process: fork/exec {missing}: no such file or directory")
    io.close()


def test_close_stops_a_logger_that_ignores_eof(tmp_path: Path) -> None:
    # The pipes are closed and SIGTERM sent, as Go's binaryIO.Close; sleep dies of it.
    logger = write_logger(tmp_path, "echo ok >&5\nexec sleep 100 5>&-\n")
    monitor = SpawnMonitor()

    io = PipeIO(Stdio(stdout=f"binary://{logger}"), monitor=monitor)
    container = Container(io)
    io.start()
    container.exit()
    started = time.monotonic()
    io.wait(0.2)  # the logger does not exit on EOF: wait gives up
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    io.close()  # returns once the logger is gone
    assert time.monotonic() - started < 5
    logger_exit = monitor.spawned[0][2]
    assert logger_exit.done()
    assert logger_exit.result().status == 128 + signal.SIGTERM


def test_close_before_start_leaves_nothing_with_a_logging_binary(tmp_path: Path) -> None:
    before = open_fds()
    io = PipeIO(Stdio(stdout="binary:///bin/true"), monitor=SpawnMonitor())
    io.close()  # runc's side and ours: no logger was started
    io.close()
    assert open_fds() == before


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_missing_output_fifo_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    from pyrunc.oci.stdio import open_output

    missing = tmp_path / "stdout-fifo"
    with pytest.raises(FileNotFoundError):
        open_output(str(missing))
    assert not missing.exists()


def test_an_existing_regular_file_is_appended_to(tmp_path: Path) -> None:
    from pyrunc.oci.stdio import open_output

    target = tmp_path / "out"
    target.write_bytes(b"before\n")
    holder, fd = open_output(str(target))
    try:
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert holder is None
    assert target.read_bytes() == b"before\nafter\n"
