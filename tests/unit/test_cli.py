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
