"""`-info` side by side with the Go shim of containerd 2.x, and pyrunc run under another name.

Both binaries get the same stdin, environment and runc (the real one, or a stand-in script that
prints a given `features` output); their RuntimeInfo must agree byte for byte in everything but
the runtime's name and version, and their failures in exit code and text. Nothing here needs a
containerd: the binaries are run directly, as containerd's RuntimeInfo runs them.

The names: a link `containerd-shim-foo-v3` to pyrunc's binary answers `-v` and `-info` as
io.containerd.foo.v3, and its `start` starts a shim that logs and is titled under that name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from pyrunc.protos import (
    introspection_pb2,
    runc_options_pb2,
    runctypes_pb2,
    runtimeoptions_pb2,
    shim_pb2,
)
from pyrunc.shim.info import FEATURES_TYPE_URL
from tests.support.names import REPO, unique_id

PYRUNC = Path(sys.executable).parent / "containerd-shim-pyrunc-v1"
GO_SHIM = REPO / ".cache" / "containerd-sid" / "usr" / "bin" / "containerd-shim-runc-v2"
RUNC = shutil.which("runc") or "/usr/sbin/runc"

needs_go_shim = pytest.mark.usefixtures("go_shim_fetched")


@pytest.fixture
def go_shim_fetched() -> None:
    """The comparison needs the 2.x Go shim: missing, it is a failure, not a skip (`make test`
    fetches it; a lane without it deselects these tests)."""
    if not GO_SHIM.exists():
        pytest.fail(f"the 2.x Go shim is not fetched ({GO_SHIM}): run `make test`")


def run_info(binary: Path | str, stdin: bytes, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(binary), "-info"], input=stdin, capture_output=True, timeout=60,
                          env=env, cwd=cwd, check=False)


def runc_options(**fields: Any) -> bytes:
    options = runc_options_pb2.Options(**fields)
    return any_pb2.Any(type_url="containerd.runc.v1.Options",
                       value=options.SerializeToString()).SerializeToString()


def stand_in(directory: Path, features: bytes | None, name: str = "runc") -> Path:
    """A runc whose `features` prints `features`; without, one that has no such command."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if features is None:
        path.write_text("#!/bin/sh\necho \"unknown command $1\" >&2\nexit 1\n")
    else:
        (directory / f"{name}.json").write_bytes(features)
        path.write_text(f'#!/bin/sh\n[ "$1" = features ] && exec /bin/cat "{path}.json"\n'
                        "exit 1\n")
    path.chmod(0o755)
    return path


def without_name_and_version(data: bytes) -> introspection_pb2.RuntimeInfo:
    info = introspection_pb2.RuntimeInfo.FromString(data)
    info.ClearField("name")
    info.ClearField("version")
    return info


def assert_answer_alike(stdin: bytes, env: dict[str, str] | None = None,
                        cwd: Path | None = None) -> introspection_pb2.RuntimeInfo | str:
    """Run both shims' -info; their answers must agree. The decoded answer, or the error."""
    go = run_info(GO_SHIM, stdin, env, cwd)
    py = run_info(PYRUNC, stdin, env, cwd)
    assert py.returncode == go.returncode, (go.stderr, py.stderr)
    if go.returncode != 0:
        assert (go.stdout, py.stdout) == (b"", b"")
        go_error = go.stderr.decode().removeprefix("io.containerd.runc.v2: ")
        py_error = py.stderr.decode().removeprefix("io.containerd.pyrunc.v1: ")
        # Go's protobuf writes a no-break space after "proto:" in some builds, on purpose.
        assert py_error == go_error.replace("proto:\u00a0", "proto: ")
        return py_error
    assert go.stderr == py.stderr == b""
    go_info, py_info = (introspection_pb2.RuntimeInfo.FromString(o) for o in (go.stdout,
                                                                             py.stdout))
    assert go_info.name == "io.containerd.runc.v2" and py_info.name == "io.containerd.pyrunc.v1"
    assert go_info.version.version and py_info.version.version
    go_rest, py_rest = without_name_and_version(go.stdout), without_name_and_version(py.stdout)
    assert [f.name for f, _ in py_rest.ListFields()] == [f.name for f, _ in go_rest.ListFields()]
    assert py_rest.options.SerializeToString() == go_rest.options.SerializeToString()
    assert py_rest.features.type_url == go_rest.features.type_url
    assert py_rest.features.value == go_rest.features.value
    assert py_rest.SerializeToString() == go_rest.SerializeToString()
    # and the bytes after name and version (fields 1 and 2 come first) are the same bytes
    assert py.stdout.endswith(py_rest.SerializeToString())
    assert go.stdout.endswith(go_rest.SerializeToString())
    return py_info


# --- the four cases --------------------------------------------------------------------------


@needs_go_shim
def test_a_no_options() -> None:
    info = assert_answer_alike(b"")
    assert isinstance(info, introspection_pb2.RuntimeInfo)
    assert not info.HasField("options") and info.features.type_url == FEATURES_TYPE_URL
    real = subprocess.run([RUNC, "features"], capture_output=True, check=True).stdout
    assert info.features.value != real and info.features.value.startswith(b'{"ociVersionMin"')


@needs_go_shim
def test_b_runc_options_with_binary_name_and_root() -> None:
    info = assert_answer_alike(runc_options(binary_name=RUNC, root="/run/pyrunc-test-root",
                                            systemd_cgroup=True))
    assert isinstance(info, introspection_pb2.RuntimeInfo)
    assert info.options.type_url == "containerd.runc.v1.Options"
    echoed = runc_options_pb2.Options.FromString(info.options.value)
    assert (echoed.binary_name, echoed.root, echoed.systemd_cgroup) == (
        RUNC, "/run/pyrunc-test-root", True)


@needs_go_shim
@pytest.mark.parametrize("binary", ["no-runc", "/nonexistent/runc", "/tmp", "plain file",
                                    "/dev/null/runc", 'say "runc"\t'])
def test_c_a_binary_name_that_is_not_there(tmp_path: Path, binary: str) -> None:
    if binary == "plain file":
        binary = str(tmp_path / "runc")
        Path(binary).write_text("#!/bin/sh\n")  # not executable
    error = assert_answer_alike(runc_options(binary_name=binary))
    assert isinstance(error, str) and error.startswith("failed to look up the path of ")


def test_c_the_error_text_is_gos() -> None:
    out = run_info(PYRUNC, runc_options(binary_name="no-runc"))
    assert (out.returncode, out.stdout) == (1, b"")
    assert out.stderr.decode() == (
        'io.containerd.pyrunc.v1: failed to look up the path of "no-runc": exec: "no-runc": '
        "executable file not found in $PATH")


@needs_go_shim
def test_d_a_runc_without_features(tmp_path: Path) -> None:
    old = stand_in(tmp_path, None)
    info = assert_answer_alike(runc_options(binary_name=str(old)))
    assert isinstance(info, introspection_pb2.RuntimeInfo)
    assert not info.HasField("features") and info.HasField("options")


# --- more of the same: options, PATH, and what runc may print ---------------------------------


def any_of(type_url: str, value: bytes) -> bytes:
    return any_pb2.Any(type_url=type_url, value=value).SerializeToString()


OPTIONS_CASES = {
    "empty Options": runc_options(),
    "packed by Python": any_of("type.googleapis.com/containerd.runc.v1.Options",
                               runc_options_pb2.Options(root="/r").SerializeToString()),
    "out of order, twice, zero, unknown": any_of(
        "containerd.runc.v1.Options",
        runc_options_pb2.Options(root="/r").SerializeToString()
        + runc_options_pb2.Options(binary_name="x", io_uid=7).SerializeToString()
        + runc_options_pb2.Options(binary_name=RUNC).SerializeToString()
        + b"\x10\x00\xa0\x06\x07"),
    "garbage": b"\xff\xff",
    "bad value": any_of("containerd.runc.v1.Options", b"\xff"),
    "unknown type": any_of("io.example.Nope", b""),
    "no type, a value": any_of("", b"\x08\x01"),
    "an explicitly empty Any": b"\x0a\x00",
}


@needs_go_shim
@pytest.mark.parametrize("stdin", OPTIONS_CASES.values(), ids=OPTIONS_CASES.keys())
def test_options(stdin: bytes) -> None:
    assert_answer_alike(stdin)


def test_the_options_the_go_shim_refuses_and_pyrunc_takes(tmp_path: Path) -> None:
    """CRI sends runtimeoptions.v1.Options to any runtime not named runc, and old Go clients the
    legacy containerd.linux.runc ones; `start` and Create take them, and so does -info (the Go
    shim says `type with url …: not found`)."""
    runc = stand_in(tmp_path, b'{"ociVersionMax":"9"}')
    body = runtimeoptions_pb2.Options(config_body=f'BinaryName = "{runc}"\n'.encode())
    legacy = runctypes_pb2.RuncOptions(runtime=str(runc), runtime_root="/r")
    for type_url, message in [("runtimeoptions.v1.Options", body),
                              ("containerd.linux.runc.RuncOptions", legacy)]:
        out = run_info(PYRUNC, any_of(type_url, message.SerializeToString()))
        assert out.returncode == 0, out.stderr
        info = introspection_pb2.RuntimeInfo.FromString(out.stdout)
        assert info.options.type_url == type_url
        assert type(message).FromString(info.options.value) == message
        assert info.features.value == b'{"ociVersionMax":"9"}'
        if GO_SHIM.exists():
            go = run_info(GO_SHIM, any_of(type_url, message.SerializeToString()))
            assert go.returncode == 1 and go.stderr.endswith(
                f"type with url {type_url}: not found".encode())


@needs_go_shim
@pytest.mark.parametrize("path", ["", ".", "/nonexistent:."])
def test_runc_from_path(tmp_path: Path, path: str) -> None:
    stand_in(tmp_path, b"{}")
    env = {**os.environ, "PATH": path}
    assert_answer_alike(b"", env, tmp_path)
    assert_answer_alike(runc_options(binary_name="./runc"), env, tmp_path)


@needs_go_shim
def test_runc_found_in_path(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", b'{"hooks":["x"]}', name="crun")
    env = {**os.environ, "PATH": f"/nonexistent:{tmp_path / 'bin'}"}
    info = assert_answer_alike(runc_options(binary_name="crun"), env)
    assert isinstance(info, introspection_pb2.RuntimeInfo)
    assert info.features.value == b'{"hooks":["x"]}'


FEATURES_CASES = [
    b'{"ociVersionMin":"1.0.0","unknown":1,"linux":{"cgroup":{"v1":false,"rdma":true,"x":2},'
    b'"intelRdt":{"enabled":true,"schemata":true},"netDevices":{"enabled":true}},"hooks":[]}',
    # every field, in reverse order
    b'{"potentiallyUnsafeConfigAnnotations":["p"],"annotations":{"x":"y"},"linux":{'
    b'"mountExtensions":{"idmap":{"enabled":false}},"intelRdt":{"enabled":false},"selinux":{'
    b'"enabled":false},"apparmor":{"enabled":true},"seccomp":{"supportedFlags":["s"],'
    b'"knownFlags":["k"],"archs":["a"],"operators":["o"],"actions":["x"],"enabled":true},'
    b'"cgroup":{"rdma":false,"systemdUser":true,"systemd":false,"v2":true,"v1":false},'
    b'"capabilities":["CAP_X"],"namespaces":["pid"]},"mountOptions":["ro"],"hooks":["h"],'
    b'"ociVersionMax":"2","ociVersionMin":"1"}',
    b'{"annotations":{"b":"<&>","a":"\\u2028\\u00e9\\u0007\\b\\f\\t\\n\\r\\u007f","\\ufffd":"",'
    b'"\xf0\x9f\x98\x80":"1","":"e"}}',
    b'{"ociVersionMin":"\\"\\\\/\\u2029\\u0000"}',
    b"null", b"[]", b"{}", b"", b"true", b'  {"hooks": null}  ', b'{"hooks":["a",null]}',
    b'{"hooks":"x"}', b'{"hooks":{}}', b'{"OCIVERSIONMIN":"1"}', b'{"ociver\xc5\xbfionmin":"s"}',
    b'{"hoo\xe2\x84\xaas":["k"]}', b'{"oci_version_min":"u"}',
    b'{"ociversionmin":"lower","ociVersionMin":"exact"}',
    b'{"linux":{"cgroup":{"v1":true}},"linux":{"cgroup":{"v2":true}}}',
    b'{"linux":{"apparmor":{"enabled":true}},"linux":null,"linux":{"selinux":{}}}',
    b'{"annotations":{"a":"1"},"annotations":{"b":"2"},"annotations":{"a":null}}',
    b'{"ociVersionMin":"a","ociVersionMin":null}', b'{"linux":null}', b'{"linux":{}}',
    b'{"linux":{"cgroup":{"v1":null},"seccomp":{"knownFlags":[]}}}',
    b'{"annotations":{"a":"\\ud800","b":"\xff\xfe","c":"\xe2\x82","d":"\xed\xa0\x80"}}',
    b'{"hooks":["\\ud83d\\ude00","\\ud83dx","\\udc00\\ud800"]}', b'{"annotations":{"a":1}}',
    b'{"linux":{"cgroup":{"v1":1}}}', b'{"ociVersionMin":"ok","hooks":[1],"mountOptions":["m"]}',
    b'{"x":NaN}', b'{"x":1} x', b'{"x":01}', b'{"x":"\t"}', b"\xef\xbb\xbf{}",
    b'{"hooks":["x"]}\x00', b'{"x":1e400}', b'{"a":{"b":[1,2,{"c":"d"}]}}',
    b'{"x":' + b"[" * 9999 + b"]" * 9999 + b"}", b'{"x":' + b"[" * 10000 + b"]" * 10000 + b"}",
]


@needs_go_shim
@pytest.mark.parametrize("features", FEATURES_CASES, ids=lambda f: f[:40].decode(errors="replace"))
def test_features_as_runc_prints_them(tmp_path: Path, features: bytes) -> None:
    runc = stand_in(tmp_path, features)
    assert_answer_alike(runc_options(binary_name=str(runc)))


# --- installed under another name -------------------------------------------------------------


@pytest.fixture
def foo_v3(tmp_path: Path) -> Path:
    """pyrunc's binary linked in as `containerd-shim-foo-v3` (runtime io.containerd.foo.v3)."""
    link = tmp_path / "bin" / "containerd-shim-foo-v3"
    link.parent.mkdir()
    link.symlink_to(PYRUNC)
    return link


def test_version_and_info_say_the_name_run_as(foo_v3: Path) -> None:
    version = subprocess.run([str(foo_v3), "-v"], capture_output=True, text=True, timeout=30,
                             check=True)
    assert version.stdout.splitlines()[:3] == [
        "containerd-shim-foo-v3:", f"  Version: {pyrunc_version()}",
        "  Runtime: io.containerd.foo.v3"]
    ok = run_info(foo_v3, b"")
    assert ok.returncode == 0, ok.stderr
    assert introspection_pb2.RuntimeInfo.FromString(ok.stdout).name == "io.containerd.foo.v3"
    bad = run_info(foo_v3, runc_options(binary_name="no-runc"))
    assert bad.stderr.decode().startswith("io.containerd.foo.v3: failed to look up the path of")
    own = run_info(PYRUNC, b"")
    assert introspection_pb2.RuntimeInfo.FromString(own.stdout).name == "io.containerd.pyrunc.v1"


def pyrunc_version() -> str:
    from pyrunc.shim import __version__

    return __version__


def shim_call(address: str, namespace: str, method: str, request: Any, response: Any) -> Any:
    from pyrunc.shim.ttrpc.client import Client

    with Client.connect(address.removeprefix("unix://"), timeout=5) as client:
        return client.call("containerd.task.v2.Task", method, request, response, timeout=10,
                           metadata={"containerd-namespace-ttrpc": namespace})


def read_available(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_shim_started_under_another_name_logs_and_is_titled_under_it(
        foo_v3: Path, tmp_path: Path) -> None:
    """`start` run as containerd-shim-foo-v3, as containerd would run it for io.containerd.foo.v3
    (without a containerd: only the shim's own Connect and Shutdown are called). Twice: the
    second shim comes from the warm parent the first one's start left running, if the first was
    not already forked from one."""
    namespace = "pyrunc-test-names"
    address = f"/run/pyrunc-test-{unique_id('names')}/containerd.sock"  # never dialled
    env = {**os.environ, "TTRPC_ADDRESS": str(tmp_path / "no-containerd.sock.ttrpc")}
    forked = []
    for n in range(2):
        id = unique_id("named")
        bundle = tmp_path / id
        bundle.mkdir()
        (bundle / "config.json").write_text("{}")
        os.mkfifo(bundle / "log", 0o700)
        log = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)  # as containerd holds it
        shim_address = ""
        try:
            started = subprocess.run(
                [str(foo_v3), "-namespace", namespace, "-address", address, "-publish-binary",
                 "/usr/bin/containerd", "-id", id, "start"],
                cwd=bundle, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=30, check=False)
            assert started.returncode == 0, started.stdout
            shim_address = started.stdout.decode().strip()
            pid = shim_call(shim_address, namespace, "Connect", shim_pb2.ConnectRequest(id=id),
                            shim_pb2.ConnectResponse).shim_pid
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            forked.append("pyrunc.shim.warm" in Path(f"/proc/{parent_of(pid)}/cmdline")
                          .read_bytes().decode(errors="replace"))
            # Forked from the warm parent or started the slow way by start itself, the shim is
            # titled as the Go shim's long-running process is, under the name start ran as.
            assert title.startswith(f"containerd-shim-foo-v3 -namespace {namespace} -id {id} "
                                    f"-address {address}"), title
            deadline = time.monotonic() + 10
            lines = b""
            while b"serving on" not in lines:
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
                lines += read_available(log)
            serving = next(line for line in lines.decode().splitlines() if "serving on" in line)
            assert "runtime=io.containerd.foo.v3" in serving, serving
            assert f"namespace={namespace}" in serving
        finally:
            if shim_address:
                stop_shim(shim_address, namespace, id)
            deleted = subprocess.run(
                [str(foo_v3), "-namespace", namespace, "-address", address, "-id", id,
                 "-bundle", str(bundle), "delete"],
                cwd=bundle, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                check=False)
            os.close(log)
        assert deleted.returncode == 0, deleted.stderr
        assert not os.path.exists(shim_address.removeprefix("unix://"))
        if n == 0:
            wait_for_warm_parent()
    assert forked[1], "the second shim was not forked from the warm parent"


def stop_shim(shim_address: str, namespace: str, id: str) -> None:
    from google.protobuf import empty_pb2

    from pyrunc.shim.ttrpc.status import TTRPCError

    # (it may close the connection as it exits, before it answers)
    with contextlib.suppress(OSError, EOFError, TTRPCError):  # ClientClosedError is an OSError
        shim_call(shim_address, namespace, "Shutdown", shim_pb2.ShutdownRequest(id=id),
                  empty_pb2.Empty)
    path = shim_address.removeprefix("unix://")
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for_warm_parent() -> None:
    from pyrunc.shim import warm

    deadline = time.monotonic() + 15
    while not os.path.exists(warm.socket_path()):
        assert time.monotonic() < deadline, "no warm parent came up"
        time.sleep(0.05)
