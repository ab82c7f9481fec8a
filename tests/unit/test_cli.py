"""The command line as containerd sends it, and the hand-encoded DeleteResponse."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pyrunc.protos import shim_pb2
from pyrunc.shim.cli import _click_command, parse_go_flags
from pyrunc.shim.manager import encode_delete_response


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


@pytest.mark.parametrize("argv", [
    ["-v"], ["-h"], ["--help"], ["-nope", "x", "start"], ["-id"], ["-id", "c", "stop"],
    ["-id", "c", "start", "extra"], ["-debug=maybe", "start"],
])
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert parse_go_flags(argv) is None


def test_click_prints_the_version_and_refuses_unknown_actions() -> None:
    runner = CliRunner()
    version = runner.invoke(_click_command(), ["-v"])
    assert version.exit_code == 0 and "io.containerd.pyrunc.v1" in version.output
    bad = runner.invoke(_click_command(), ["-id", "c", "stop"])
    assert bad.exit_code == 2 and "unknown action 'stop'" in bad.output


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
    data = encode_request("k8s.io", "c1", "/run/containerd/containerd.sock", True,
                          b"\x0a\x03any", "/run/bundle", env)
    args, cwd, decoded_env = decode_request(data)
    assert args == {"namespace": "k8s.io", "id": "c1",
                    "address": "/run/containerd/containerd.sock", "debug": True,
                    "options": b"\x0a\x03any"}
    assert cwd == "/run/bundle"
    assert decoded_env == {"PATH": "/usr/bin:/bin", "TTRPC_ADDRESS": "/run/c.sock.ttrpc",
                           "EMPTY": "", "WITH": "EQUALS=a=b"}  # the first '=' splits, as in C


@pytest.mark.parametrize("garbage", [b"", b"{}", b"pyrunc-warm-0\0a\0b\0c\0\0\0/", b"\xff" * 9])
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
