"""start/delete helpers: the socket address, ids, grouping, bundle files."""

from __future__ import annotations

import os
import posixpath
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrunc.oci import bundle
from pyrunc.oci.options import RuntimeOptions
from pyrunc.shim import paths
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


# --- start and delete without os ------------------------------------------------------------------


def test_the_runc_root_delete_knows_is_runcs() -> None:
    from pyrunc.oci.runc import DEFAULT_RUNC_ROOT
    from pyrunc.shim.runc_shim import RUNC_ROOT

    assert RUNC_ROOT == DEFAULT_RUNC_ROOT


PATHS = st.text(alphabet="/.ab \\", max_size=12)


@given(PATHS, st.lists(PATHS, max_size=3))
def test_join_is_posixpaths(path: str, parts: list[str]) -> None:
    for module in (bundle, paths):  # oci's copy and the framework's
        assert module.join(path, *parts) == posixpath.join(path, *parts)


@given(PATHS)
def test_normpath_and_dirname_are_posixpaths(path: str) -> None:
    for module in (bundle, paths):
        assert module.normpath(path) == posixpath.normpath(path)
        assert module.dirname(path) == posixpath.dirname(path)


@pytest.mark.parametrize("path", [
    "/run/containerd/containerd.sock/default/redis", "/a", "a/b", "/", "//a", "///a", "", ".",
    "/a/./b", "/a/../b", "a/", "/a//b", "..", "/..", "./a",
])
def test_normpath_on_the_paths_that_matter(path: str) -> None:
    assert bundle.normpath(path) == paths.normpath(path) == posixpath.normpath(path)



def test_exists_and_is_dir_are_os_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("", "file", "link", "dangling", "nowhere", "file/x"):
        path = str(tmp_path / name)
        for module in (bundle, paths):
            assert module.exists(path) == os.path.exists(path), name
            assert module.is_dir(path) == os.path.isdir(path), name
    assert bundle.exists("a\0b") is paths.exists("a\0b") is os.path.exists("a\0b") is False


def test_the_init_pid_is_read_as_runc_wrote_it(tmp_path: Path) -> None:
    from pyrunc.oci.runc import read_pid_file

    for text in ("4242", " 4242\n", "", "x", "\xff"):
        (tmp_path / "init.pid").write_text(text)
        assert bundle.read_init_pid(str(tmp_path)) == read_pid_file(str(tmp_path / "init.pid"))
    (tmp_path / "init.pid").unlink()
    assert bundle.read_init_pid(str(tmp_path)) == 0


def test_a_bundle_that_delete_finds_clean_costs_no_os_nor_runc(tmp_path: Path) -> None:
    """`delete` after a normal teardown (and `start`'s own modules) load neither os (with the
    collections.abc it imports, about 1 ms of the 3 the actions may take over the bare
    interpreter) nor oci/runc.py, json, dataclasses, typing or click."""
    import subprocess
    import sys

    import pyrunc.shim

    # (pyrunc itself is a namespace package once installed: it has no __file__)
    src = str(Path(pyrunc.shim.__file__ or ".").absolute().parents[2])
    bundle.write_options(str(tmp_path), RuntimeOptions())
    bundle.write_runtime(str(tmp_path), "runc")
    (tmp_path / "init.pid").write_text("4242")
    (tmp_path / "rootfs").mkdir()
    write_address(str(tmp_path), "unix:///run/containerd/s/" + "0" * 64)
    code = (
        f"import sys; sys.path[:0] = [{src!r}]\n"
        "import pyrunc.shim.manager, pyrunc.shim.cli, pyrunc.shim.mount\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
        "from pyrunc.shim.manager import delete\n"
        "from pyrunc.shim.runc_shim import SHIM\n"
        f"code = delete(SHIM, namespace='pyrunc-test', id='c1', bundle={str(tmp_path)!r},"
        " debug=False)\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"\x08\x92\x21")  # the DeleteResponse, pid 4242
    imported, after_delete = (set(line.split()) for line in result.stderr.decode().splitlines())
    for modules in (imported, after_delete):
        assert not modules & {"os", "posixpath", "_collections_abc", "json", "dataclasses",
                              "typing", "click", "pyrunc.oci.runc", "pyrunc.shim.spawn"}


def test_start_asks_the_warm_parent_without_loading_os() -> None:
    """What `start` runs when a warm parent serves (naming the parent's socket, building the
    request) loads no os: about 1 ms of start's 3 over the bare interpreter."""
    import subprocess
    import sys

    import pyrunc.shim

    src = str(Path(pyrunc.shim.__file__ or ".").absolute().parents[2])
    code = (
        f"import sys; sys.path[:0] = [{src!r}]\n"
        "import pyrunc.shim.runc_shim, pyrunc.shim.cli, pyrunc.shim.manager\n"
        "import pyrunc.shim.warm as warm\n"
        "warm.socket_path()\n"
        "warm.encode_request('pyrunc.shim.runc_shim', 'io.containerd.pyrunc.v1', 'ns', 'c1', '/a',"
        " False, b'', '/',"
        " warm._environ())\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                            timeout=30, check=True)
    modules = set(result.stdout.decode().split())
    assert "pyrunc.shim.warm" in modules
    assert not modules & {"os", "posixpath", "_collections_abc", "socket", "json", "typing"}


def test_the_request_carries_the_environment_as_os_has_it(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import os

    from pyrunc.shim.warm import _environ

    monkeypatch.setenv("PYRUNC_TEST_VALUE", "a=b c\u00e9")
    assert _environ() == dict(os.environ)
