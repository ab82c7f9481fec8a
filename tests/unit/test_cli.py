"""The command line as containerd sends it, the runtime name the binary was run as, the
warm parent's requests, and the hand-encoded DeleteResponse."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pyrunc.protos import shim_pb2
from pyrunc.shim import config
from pyrunc.shim.cli import _click_command, binary_name_of, parse_go_flags, runtime_name_of
from pyrunc.shim.manager import encode_delete_response
from pyrunc.shim.runc_shim import SHIM


def test_containerds_start_command_line() -> None:
    values = parse_go_flags(["-namespace", "default", "-address", "/run/containerd/containerd.sock",
                             "-publish-binary", "/usr/bin/containerd", "-id", "redis", "-debug",
                             "start"])
    assert values is not None
    assert (values["namespace"], values["id"], values["address"], values["debug"],
            values["action"]) == ("default", "redis", "/run/containerd/containerd.sock", True,
                                  "start")


def test_containerds_delete_command_line_and_go_spellings() -> None:
    values = parse_go_flags(["--namespace=k8s.io", "-id", "c1", "-bundle", "/b", "-debug=false",
                             "delete"])
    assert values is not None
    assert (values["namespace"], values["bundle"], values["debug"], values["action"]) == (
        "k8s.io", "/b", False, "delete")


def test_no_action_is_the_long_running_shim() -> None:
    values = parse_go_flags(["-namespace", "n", "-id", "c", "-address", "/a"])
    assert values is not None and values["action"] is None


@pytest.mark.parametrize(("argv", "flag"), [
    (["-info"], "info"), (["--info=true"], "info"), (["-v"], "version"), (["-version"], "version"),
    (["--version=true"], "version"),
    (["-namespace", "n", "-info", "start"], "info"),  # as the Go shim: -info wins
])
def test_info_and_version_take_the_fast_path(argv: list[str], flag: str) -> None:
    values = parse_go_flags(argv)
    assert values is not None and values[flag] is True


def test_start_names_the_runtime_to_the_shim_it_spawns() -> None:
    values = parse_go_flags(["-namespace", "n", "-id", "c", "-address", "/a",
                             "-runtime-name", "io.containerd.foo.v3"])
    assert values is not None and values["runtime_name"] == "io.containerd.foo.v3"


@pytest.mark.parametrize("argv", [
    ["-h"], ["--help"], ["-nope", "x", "start"], ["-id"], ["-id", "c", "stop"],
    ["-id", "c", "start", "extra"], ["-debug=maybe", "start"], ["-info=maybe"],
])
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert parse_go_flags(argv) is None


@pytest.mark.parametrize(("argv0", "runtime"), [
    ("/usr/local/bin/containerd-shim-pyrunc-v1", "io.containerd.pyrunc.v1"),
    ("containerd-shim-runc-v2", "io.containerd.runc.v2"),
    ("/tmp/x/containerd-shim-foo-v3", "io.containerd.foo.v3"),
    ("/opt/containerd-shim-foo-bar-v12", "io.containerd.foo-bar.v12"),
    # anything else: the default name
    ("/opt/pyrunc/lib/python3.11/site-packages/pyrunc/shim/__main__.py",
     "io.containerd.pyrunc.v1"),
    ("-c", "io.containerd.pyrunc.v1"), ("", "io.containerd.pyrunc.v1"),
    ("containerd-shim-v2", "io.containerd.pyrunc.v1"),
    ("containerd-shim-foo-2", "io.containerd.pyrunc.v1"),
    ("containerd-shim-foo-v", "io.containerd.pyrunc.v1"),
    ("containerd-shim-foo-v²", "io.containerd.pyrunc.v1"),
    ("containerd-shim-a.b-v1", "io.containerd.pyrunc.v1"),
    ("/containerd-shim-foo-v1/python", "io.containerd.pyrunc.v1"),
])
def test_the_runtime_name_is_the_one_the_binary_was_run_as(argv0: str, runtime: str) -> None:
    assert runtime_name_of(argv0) == runtime


@pytest.mark.parametrize(("runtime", "binary"), [
    ("io.containerd.pyrunc.v1", "containerd-shim-pyrunc-v1"),
    ("io.containerd.foo-bar.v12", "containerd-shim-foo-bar-v12"),
    ("com.example.thing.v2", "containerd-shim-thing-v2"),  # containerd's mapping: the last two
    ("nodots", "containerd-shim-pyrunc-v1"),
])
def test_binary_names_are_containerds(runtime: str, binary: str) -> None:
    assert binary_name_of(runtime) == binary


def test_click_prints_the_version_and_refuses_unknown_actions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    version = runner.invoke(_click_command(SHIM), ["--version"])
    assert version.exit_code == 0 and "io.containerd.pyrunc.v1" in version.output
    monkeypatch.setattr("sys.argv", ["/opt/bin/containerd-shim-runc-v2", "--version"])
    version = runner.invoke(_click_command(SHIM), ["--version"])
    assert version.output.splitlines()[0] == "containerd-shim-runc-v2:"
    assert "Runtime: io.containerd.runc.v2" in version.output
    bad = runner.invoke(_click_command(SHIM), ["-id", "c", "stop"])
    assert bad.exit_code == 2 and 'unknown action "stop"' in bad.output


@pytest.mark.parametrize(("pid", "status", "ns"), [
    (0, 137, 1_700_000_000_123_456_789),
    (4242, 137, 1_700_000_000_000_000_000),
    (2**32 - 1, 0, 5),
    (1, 255, -62135596800 * 1_000_000_000),  # Go's zero time: a negative int64
])
def test_delete_response_is_encoded_as_protobuf_would(pid: int, status: int, ns: int) -> None:
    expected = shim_pb2.DeleteResponse(pid=pid, exit_status=status)
    expected.exited_at.seconds, expected.exited_at.nanos = divmod(ns, 1_000_000_000)
    encoded = encode_delete_response(pid, status, ns)
    assert shim_pb2.DeleteResponse.FromString(encoded) == expected
    assert encoded == expected.SerializeToString()


def test_warm_requests_round_trip() -> None:
    from pyrunc.shim.warm import decode_request, encode_request

    env = {"PATH": "/usr/bin:/bin", "TTRPC_ADDRESS": "/run/c.sock.ttrpc", "EMPTY": "",
           "WITH=EQUALS": "a=b"}
    data = encode_request("pyrunc.shim.runc_shim", "io.containerd.runc.v2", "k8s.io", "c1",
                          "/run/containerd/containerd.sock", True, b"\x0a\x03any", "/run/bundle",
                          env, "grouping=pod\nwarm.enabled=true\n")
    args, cwd, decoded_env = decode_request(data)
    # the runtime name travels with each request: one warm parent serves every installed name
    assert args == {"module": "pyrunc.shim.runc_shim", "runtime": "io.containerd.runc.v2",
                    "namespace": "k8s.io", "id": "c1",
                    "address": "/run/containerd/containerd.sock", "debug": True,
                    "options": b"\x0a\x03any", "settings": "grouping=pod\nwarm.enabled=true\n"}
    assert cwd == "/run/bundle"
    assert decoded_env == {"PATH": "/usr/bin:/bin", "TTRPC_ADDRESS": "/run/c.sock.ttrpc",
                           "EMPTY": "", "WITH": "EQUALS=a=b"}  # the first '=' splits, as in C


@pytest.mark.parametrize("garbage", [
    b"", b"{}", b"pyrunc-warm-0\0a\0b\0c\0\0\0/", b"\xff" * 9,
    b"pyrunc-warm-1\0ns\0id\0/a\0\0\0/bundle\0PATH=/bin",  # the request before the name
    b"pyrunc-warm-2\0\0ns\0id\0/a\0\0\0/bundle\0PATH=/bin",  # a request without one
])
def test_anything_else_is_not_a_warm_request(garbage: bytes) -> None:
    from pyrunc.shim.warm import decode_request

    with pytest.raises(ValueError):
        decode_request(garbage)


def test_bundle_files_are_parsed_only_when_they_hold_something(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from pyrunc.oci import bundle
    from pyrunc.oci.options import RuntimeOptions

    path = Path(str(tmp_path))
    (path / "config.json").write_text(json.dumps({"annotations": {"x": "y"}}))
    assert bundle.group_of_bundle(str(path), "c1") == "c1"
    (path / "config.json").write_text(json.dumps(
        {"annotations": {"io.kubernetes.cri.sandbox-id": "pod-1"}}))
    assert bundle.group_of_bundle(str(path), "c1") == "pod-1"
    bundle.write_options(str(path), RuntimeOptions())
    assert bundle.read_options_raw(str(path)) == {}
    bundle.write_options(str(path), RuntimeOptions(root="/r"))
    assert bundle.read_options_raw(str(path))["root"] == "/r"
    assert bundle.read_options(str(path)) == RuntimeOptions(root="/r")


def test_a_warm_parent_starting_up_is_not_started_twice(tmp_path: object) -> None:
    import fcntl
    import os
    from pathlib import Path

    from pyrunc.shim.warm import _warm_parent_holds_lock

    sock = str(Path(str(tmp_path)) / "warm.sock")
    assert not _warm_parent_holds_lock(sock)  # no lock file: none was ever started
    fd = os.open(sock + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not _warm_parent_holds_lock(sock)  # a lock file nobody holds: it exited
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fork() == 0:  # flock is per open file: ask from another process
            os._exit(0 if _warm_parent_holds_lock(sock) else 1)
        _, status = os.wait()
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_start_passes_the_runtime_name_to_the_warm_parent_and_the_slow_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from pyrunc.shim import manager, spawn, warm

    requests: list[dict[str, object]] = []
    spawned: list[list[str]] = []
    monkeypatch.setattr(warm, "request_shim", lambda listener, **kw: requests.append(kw))
    monkeypatch.setattr(warm, "spawn_warm_parent", lambda module, **kw: None)
    monkeypatch.setattr(spawn, "spawn", lambda argv, **kw: spawned.append(list(argv)) or 4242)
    settings = config.defaults(SHIM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = manager._start_shim(SHIM, listener, namespace="ns", id="c1", address="/a",
                                  debug=False, options=b"", runtime="io.containerd.foo.v3",
                                  settings=settings)
    finally:
        listener.close()
    assert pid == 4242  # no warm parent answered (None): spawned the slow way
    assert requests[0]["runtime"] == "io.containerd.foo.v3"
    assert requests[0]["module"] == "pyrunc.shim.runc_shim"  # the parent forks this shim
    assert requests[0]["settings"] == settings.encode()  # and the settings start read
    argv = spawned[0]
    assert argv[argv.index("-m") + 1] == "pyrunc.shim.runc_shim"  # the slow way runs it too
    assert argv[argv.index("-runtime-name") + 1] == "io.containerd.foo.v3"
    values = parse_go_flags(argv[4:])  # what the spawned shim's command line parses to
    assert values is not None and values["runtime_name"] == "io.containerd.foo.v3"
    assert config.decode(values["settings"], SHIM).values == settings.values


def test_without_the_warm_parent_start_spawns_and_starts_no_parent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from pyrunc.shim import manager, spawn, warm

    calls: list[str] = []
    monkeypatch.setattr(warm, "request_shim", lambda listener, **kw: calls.append("request"))
    monkeypatch.setattr(warm, "spawn_warm_parent", lambda module, **kw: calls.append("parent"))
    monkeypatch.setattr(spawn, "spawn", lambda argv, **kw: 4243)
    settings = config.check({"warm": {"enabled": False}}, "/etc/pyrunc/config.toml", SHIM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = manager._start_shim(SHIM, listener, namespace="ns", id="c1", address="/a",
                                  debug=False, options=b"", runtime="io.containerd.foo.v3",
                                  settings=settings)
    finally:
        listener.close()
    assert (pid, calls) == (4243, [])


# --- how start and delete end ---------------------------------------------------------------------


def test_start_and_delete_end_without_finalization_but_with_what_an_exit_does(
        tmp_path: object) -> None:
    """`_exit` skips the interpreter's finalization (about 1.2 ms) but still runs the atexit
    handlers and flushes stdout and stderr, and keeps the exit status."""
    import subprocess
    import sys
    from pathlib import Path

    import pyrunc.shim

    # (pyrunc itself is a namespace package once installed: it has no __file__)
    src = str(Path(pyrunc.shim.__file__ or ".").absolute().parents[2])
    bundle = str(tmp_path)

    def delete(id: str) -> subprocess.CompletedProcess[bytes]:
        code = (
            f"import sys; sys.path[:0] = [{src!r}]\n"
            "import atexit\n"
            "atexit.register(lambda: print('atexit ran', end='', file=sys.stderr))\n"
            "sys.stdout.write('buffered, ')  # (stdout is a pipe: block-buffered)\n"
            "from pyrunc.shim.runc_shim import main\n"
            "sys.argv = ['containerd-shim-pyrunc-v1', '-namespace', 'pyrunc-test', '-id', "
            f"{id!r}, '-bundle', {bundle!r}, 'delete']\n"
            "main()\n"
            "print('not reached')\n"
        )
        return subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                              timeout=30)

    done = delete("c1")
    assert done.returncode == 0, done.stderr
    # The DeleteResponse (written to the binary buffer directly), then what was still in the
    # text layer's buffer: flushed, as an ordinary exit would have.
    assert done.stdout.startswith(b"\x10\x89\x01\x1a")
    assert done.stdout.endswith(b"buffered, ")
    assert b"not reached" not in done.stdout
    assert done.stderr == b"atexit ran"
    refused = delete("a/b")
    assert refused.returncode == 1
    assert refused.stderr.startswith(b'pyrunc delete: container id "a/b"')
    assert refused.stderr.endswith(b"atexit ran")


def test_exit_falls_back_to_the_ordinary_exit_when_the_output_cannot_be_flushed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import posix
    import sys

    from pyrunc.shim import cli

    ended: list[int] = []

    class Ended(Exception):
        pass

    def fake_exit(code: int) -> None:
        ended.append(code)
        raise Ended

    class Broken:
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(posix, "_exit", fake_exit)
    with pytest.raises(Ended):
        cli._exit(3)
    assert ended == [3]
    monkeypatch.setattr(sys, "stdout", Broken())
    with pytest.raises(SystemExit) as ordinary:  # the interpreter then reports the broken pipe
        cli._exit(4)
    assert ordinary.value.code == 4 and ended == [3]
