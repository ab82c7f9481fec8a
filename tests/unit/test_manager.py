"""start/delete helpers: the socket address, ids, grouping, bundle files."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from pyrunc.oci import bundle
from pyrunc.oci.options import RuntimeOptions
from pyrunc.shim.manager import bind_socket, can_connect, socket_address, write_address


def test_socket_address_matches_the_go_shims() -> None:
    # protocol-facts §4.3: sha256 of "/run/containerd/containerd.sock/default/redis"
    assert socket_address("/run/containerd/containerd.sock", "default", "redis") == (
        "unix:///run/containerd/s/"
        "f6b99128c07bdbd0902363ba979c22f8ef053e683a7ce24dd016a1ab17092c33"
    )


def test_socket_address_fits_sun_path() -> None:
    assert len(socket_address("/x", "ns", "a" * 76).removeprefix("unix://")) <= 106


def test_bound_socket_is_a_0600_file(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "sock")
    listener = bind_socket(path)
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert can_connect(path)
    finally:
        listener.close()
    assert not can_connect(path)  # bound but nobody listening: stale


def test_too_long_socket_path_is_refused_in_the_go_shims_words(tmp_path: Path) -> None:
    path = str(tmp_path / ("x" * 120))
    with pytest.raises(OSError) as refused:
        bind_socket(path)
    assert str(refused.value) == f'"{path}": unix socket path too long (> 106)'


def test_address_file_is_written_whole(tmp_path: Path) -> None:
    write_address(str(tmp_path), "unix:///run/containerd/s/abc")
    assert (tmp_path / "address").read_text() == "unix:///run/containerd/s/abc"
    assert not (tmp_path / "address.tmp").exists()


@pytest.mark.parametrize("good", ["redis", "a", "a.b-c_d", "A1", "x" * 76])
def test_valid_ids(good: str) -> None:
    bundle.validate_id("container", good)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", "a..b", "-a", "a-", "x" * 77,
                                 "a b", "a\x00b", ".hidden"])
def test_invalid_ids_are_refused_before_any_path_is_built(bad: str) -> None:
    with pytest.raises(bundle.InvalidID):
        bundle.validate_id("container", bad)


def test_group_prefers_the_runc_group_annotation() -> None:
    spec = {"annotations": {"io.kubernetes.cri.sandbox-id": "pod",
                            "io.containerd.runc.v2.group": "grp"}}
    assert bundle.group_id(spec, "c") == "grp"
    assert bundle.group_id({"annotations": {"io.kubernetes.cri.sandbox-id": "pod"}}, "c") == "pod"
    assert bundle.group_id({}, "c") == "c"


def test_pid_namespace_of_its_own() -> None:
    assert bundle.has_own_pid_namespace({"linux": {"namespaces": [{"type": "pid"}]}})
    assert not bundle.has_own_pid_namespace(
        {"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}})
    assert not bundle.has_own_pid_namespace({"linux": {"namespaces": [{"type": "mount"}]}})


def test_options_round_trip_and_survive_a_missing_file(tmp_path: Path) -> None:
    assert bundle.read_options(str(tmp_path)) == RuntimeOptions()
    options = RuntimeOptions(binary_name="crun", root="/r", systemd_cgroup=True)
    bundle.write_options(str(tmp_path), options)
    assert bundle.read_options(str(tmp_path)) == options


def test_unused_socket_file_left_by_a_dead_shim_can_be_rebound(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # file stays, nobody listens
    from pyrunc.shim.manager import _listen_or_join

    listener = _listen_or_join(path)
    assert listener is not None
    listener.close()


def test_runtime_options_from_each_kind_of_client() -> None:
    from google.protobuf import any_pb2

    from pyrunc.protos import runc_options_pb2, runctypes_pb2
    from pyrunc.shim.task import runtime_options
    from pyrunc.shim.ttrpc.status import TTRPCError

    def packed(message: object, type_url: str) -> any_pb2.Any:
        return any_pb2.Any(type_url=type_url, value=message.SerializeToString())  # type: ignore[attr-defined]

    assert runtime_options(any_pb2.Any()) == RuntimeOptions()
    runc = packed(runc_options_pb2.Options(binary_name="crun", root="/r", io_uid=7),
                  "containerd.runc.v1.Options")
    assert runtime_options(runc) == RuntimeOptions(binary_name="crun", root="/r", io_uid=7)
    prefixed = packed(runc_options_pb2.Options(no_pivot_root=True),
                      "type.googleapis.com/containerd.runc.v1.Options")
    assert runtime_options(prefixed).no_pivot_root
    legacy = packed(runctypes_pb2.RuncOptions(runtime="runc2", systemd_cgroup=True),
                    "containerd.linux.runc.RuncOptions")
    assert runtime_options(legacy) == RuntimeOptions(binary_name="runc2",
                                                           systemd_cgroup=True)
    cri = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=b"\n\x03abc")
    assert runtime_options(cri) == RuntimeOptions()
    with pytest.raises(TTRPCError) as refused:
        runtime_options(any_pb2.Any(type_url="example.Unknown"))
    assert refused.value.code == 3
