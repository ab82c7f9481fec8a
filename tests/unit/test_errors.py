"""Error texts in the Go shim's words: Go's `op path: strerror`, os/exec's, %q quoting.

containerd hands these texts on to its users, who know (and match on) the Go shim's: Python's
`[Errno 2] No such file or directory: 'runc'` must never be what they see.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pyrunc.oci import bundle
from pyrunc.oci.cgroups import CgroupGone, CgroupV2
from pyrunc.oci.errors import (
    ExecError,
    MessageError,
    PathError,
    describe,
    exec_error,
    look_path,
    quote,
    start_failure,
    strerror,
)
from pyrunc.oci.runc import Runc, RuncError
from pyrunc.shim import manager
from pyrunc.shim.mount import Mount, MountError, check
from pyrunc.shim.runc_shim import SHIM
from pyrunc.shim.spawn import spawn
from pyrunc.shim.task import runtime_options
from pyrunc.shim.ttrpc.status import TTRPCError

NOT_FOUND = 'exec: "no-runc": executable file not found in $PATH'


@pytest.fixture
def search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory as the only PATH entry (os.environ also sets the C environment,
    where posix_spawnp looks)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


# --- the renderings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text"), [
    (errno.ENOENT, "no such file or directory"),
    (errno.EACCES, "permission denied"),
    (errno.EEXIST, "file exists"),
    (errno.EBUSY, "device or resource busy"),
    (errno.ENOEXEC, "exec format error"),
    (errno.EDOTDOT, "RFS specific error"),  # an acronym keeps its capitals, as in Go's table
])
def test_strerror_is_gos_wording_of_an_errno(code: int, text: str) -> None:
    assert strerror(code) == text


@pytest.mark.parametrize(("text", "quoted"), [
    ("no-runc", '"no-runc"'),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
    ("tab\tnew\nline\x00\x7f", '"tab\\tnew\\nline\\x00\\x7f"'),
    ("café ☕", '"café ☕"'),  # printable non-ASCII stays as it is
    ("zero\u200bwidth", '"zero\\u200bwidth"'),
    (os.fsdecode(b"bad\xff"), '"bad\\xff"'),  # an undecodable byte comes out as that byte
    ("", '""'),
])
def test_quote_is_gos_percent_q(text: str, quoted: str) -> None:
    assert quote(text) == quoted


def test_path_error_reads_as_gos_and_is_still_an_oserror() -> None:
    error = PathError("open", "/run/x/config.json", errno.ENOENT)
    assert str(error) == "open /run/x/config.json: no such file or directory"
    assert isinstance(error, OSError)
    assert (error.errno, error.filename, error.op) == (errno.ENOENT, "/run/x/config.json", "open")


def test_message_error_has_no_errno_prefix() -> None:
    error = MessageError(errno.EINVAL, "unknown STDIO scheme tcp")
    assert str(error) == "unknown STDIO scheme tcp"
    assert error.errno == errno.EINVAL


def test_an_oserror_python_raised_is_described_as_go_would(tmp_path: Path) -> None:
    missing = tmp_path / "config.json"
    with pytest.raises(OSError) as opened:
        open(missing)  # noqa: SIM115 -- it fails
    assert str(opened.value) == f"[Errno 2] No such file or directory: '{missing}'"  # Python
    assert describe(opened.value, "open") == f"open {missing}: no such file or directory"
    assert describe(opened.value) == f"{missing}: no such file or directory"
    with pytest.raises(OSError) as renamed:
        os.rename(missing, tmp_path / "b")
    assert describe(renamed.value, "rename") == (
        f"rename {missing} {tmp_path / 'b'}: no such file or directory")


def test_describe_keeps_a_message_of_its_own_and_other_exceptions_text() -> None:
    assert describe(OSError(errno.EEXIST, "no unused directory name under /tmp")) == (
        "no unused directory name under /tmp")
    assert describe(OSError(errno.EPIPE, os.strerror(errno.EPIPE))) == "broken pipe"
    assert describe(PathError("mkdir", "/x", errno.ENOTDIR), "open") == (
        "mkdir /x: not a directory")  # already worded: the op given does not replace its own
    assert describe(ValueError("bad value")) == "bad value"
    assert describe(TimeoutError()) == "timeout"


# --- programs that cannot be started ----------------------------------------------------------


def test_a_bare_name_not_on_path_is_not_found_in_path(search_path: Path) -> None:
    error = exec_error("no-runc", FileNotFoundError(errno.ENOENT, "x", "no-runc"))
    assert str(error) == NOT_FOUND
    assert isinstance(error, ExecError) and error.errno == errno.ENOENT


def test_a_name_on_path_that_is_not_executable_is_not_found_either(search_path: Path) -> None:
    # Go's LookPath skips files without an execute bit; posix_spawnp says EACCES.
    (search_path / "no-runc").write_text("#!/bin/sh\n")
    assert look_path("no-runc") == ""
    assert str(exec_error("no-runc", PermissionError(errno.EACCES, "x", "no-runc"))) == NOT_FOUND


def test_a_name_found_on_path_that_fails_to_run_is_named_by_its_path(search_path: Path) -> None:
    broken = search_path / "runc"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    error = exec_error("runc", OSError(errno.ENOEXEC, "x", "runc"))
    assert str(error) == f"fork/exec {broken}: exec format error"


def test_a_path_is_started_as_it_is() -> None:
    assert str(exec_error("/opt/no/runc", FileNotFoundError(errno.ENOENT, "x"))) == (
        "fork/exec /opt/no/runc: no such file or directory")
    assert str(exec_error("./runc", PermissionError(errno.EACCES, "x"))) == (
        "fork/exec ./runc: permission denied")


def test_spawn_of_a_missing_program_raises_os_execs_words(search_path: Path) -> None:
    from pyrunc.shim import errors as framework

    with pytest.raises(framework.ExecError) as missing:
        spawn(["no-runc", "--version"])
    assert str(missing.value) == NOT_FOUND
    with pytest.raises(OSError) as absent:
        spawn([str(search_path / "runc"), "--version"])
    assert str(absent.value) == f"fork/exec {search_path / 'runc'}: no such file or directory"


def test_spawn_of_a_file_that_is_not_executable_is_permission_denied(search_path: Path) -> None:
    script = search_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(OSError) as refused:
        spawn([str(script)])
    assert str(refused.value) == f"fork/exec {script}: permission denied"
    assert refused.value.errno == errno.EACCES


def test_start_failure_words_what_any_monitor_raises() -> None:
    # A monitor that calls posix_spawn itself raises Python's OSError naming the program.
    raw = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/opt/logger")
    assert start_failure("/opt/logger", raw) == (
        "fork/exec /opt/logger: no such file or directory")
    # One that failed before spawning (no fds left) is not the program's fault.
    assert start_failure("/opt/logger", OSError(errno.EMFILE, os.strerror(errno.EMFILE))) == (
        "too many open files")


# --- runc, and the delete action ----------------------------------------------------------------


class _NoSuchProgram:
    """A ProcessMonitor whose every spawn fails as posix_spawnp does for a missing program."""

    def spawn(self, argv: list[str], **_: object) -> tuple[int, object]:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])

    def watch(self, pid: int, since_ns: int = 0) -> object:
        raise AssertionError("not used")


def test_runc_that_cannot_start_is_explained_as_the_go_shim_does(
        tmp_path: Path, search_path: Path) -> None:
    log = tmp_path / "log.json"  # runc never ran, so it never wrote its log
    runc = Runc(_NoSuchProgram(), root=str(tmp_path / "root"), log=str(log),  # type: ignore[arg-type]
                binary="no-runc")
    with pytest.raises(RuncError) as failed:
        runc.start("c1")
    assert failed.value.message == (
        f"unable to retrieve OCI runtime error (open {log}: no such file or directory): "
        f"{NOT_FOUND}")
    log.write_text("")  # a log with nothing in it: the cause alone
    with pytest.raises(RuncError) as again:
        runc.start("c1")
    assert again.value.message == NOT_FOUND


def test_delete_warns_of_a_missing_runc_in_os_execs_words(
        tmp_path: Path, search_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    bundle = tmp_path / "c1"
    bundle.mkdir()
    root = tmp_path / "runc-root"
    (root / "ns" / "c1").mkdir(parents=True)  # runc still has state for it: delete runs runc
    (bundle / "options.json").write_text(
        f'{{"binary_name": "no-runc", "root": "{root}", "systemd_cgroup": false}}')
    assert manager.delete(SHIM, namespace="ns", id="c1", bundle=str(bundle), debug=False) == 0
    out, err = capfdbinary.readouterr()
    assert err.decode() == f"pyrunc: failed to remove runc container c1: {NOT_FOUND}\n"
    assert out  # the DeleteResponse, all the same


# --- texts that used to be Python's ---------------------------------------------------------------


def test_refusals_quote_what_they_refuse_as_go_does() -> None:
    with pytest.raises(ValueError) as bad_id:
        bundle.validate_id("container", "a/b")
    assert str(bad_id.value).startswith('container id "a/b" must be')
    with pytest.raises(MountError) as bad_type:
        check(Mount("fuse/sshfs", "x"))
    assert str(bad_type.value) == 'refusing mount of type "fuse/sshfs"'
    with pytest.raises(TTRPCError) as bad_options:
        runtime_options(any_pb2.Any(type_url="example.com/Nope", value=b""))
    assert bad_options.value.message == (
        'unsupported runtime options type "example.com/Nope": invalid argument')


def test_a_bundle_without_its_spec_says_which_file_it_could_not_open(tmp_path: Path) -> None:
    with pytest.raises(OSError) as missing:
        bundle.load_spec(str(tmp_path))
    assert str(missing.value) == f"open {tmp_path}/config.json: no such file or directory"


def test_stats_of_a_removed_cgroup_say_so_and_name_it(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(CgroupGone) as failed:
        CgroupV2(str(gone)).stats()
    assert str(failed.value) == f"cgroup deleted: {gone}"  # not CgroupV2('…')


# --- the framework's copy (pyrunc.shim.errors) ---------------------------------------------


def _corpus(tmp_path: Path) -> list[BaseException]:
    plain = tmp_path / "plain"
    plain.write_text("")
    return [
        FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/run/x/config.json"),
        OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a", "/b"),
        PermissionError(errno.EACCES, "a message of our own"),
        OSError(errno.ENOSYS, os.strerror(errno.ENOSYS)),
        TimeoutError(),
        ValueError("bad value"),
        KeyError(),
        PathError("open", "/x", errno.ENOENT),
        MessageError(errno.EIO, "logging binary not ready"),
        exec_error("no-runc", FileNotFoundError(errno.ENOENT, "x", "no-runc"), ""),
        exec_error(str(plain), PermissionError(errno.EACCES, "x")),
    ]


def test_the_framework_words_every_error_as_oci_does(tmp_path: Path) -> None:
    # Two copies of one set of rules (neither package may import the other): they must agree,
    # and what one worded the other passes on unchanged.
    from pyrunc.shim import errors as framework

    for error in _corpus(tmp_path):
        assert framework.describe(error) == describe(error), repr(error)
        assert framework.describe(error, "read", "/p") == describe(error, "read", "/p")
    worded = [
        framework.MessageError(errno.EIO, "worded by the framework"),
        framework.exec_error("no-runc", FileNotFoundError(errno.ENOENT, "x", "no-runc"), ""),
    ]
    for error in worded:
        assert describe(error) == framework.describe(error) == str(error)
    assert start_failure("no-runc", worded[1]) == NOT_FOUND
    for text in ["runc", 'say "hi"\t', "caf\u00e9", "\udcff", "\x07\u2028\U0001f600", ""]:
        assert framework.quote(text) == quote(text), repr(text)
    for code in (None, 0, errno.ENOENT, errno.EACCES, errno.ENOEXEC, 100, 4095):
        assert framework.strerror(code) == strerror(code)
    for name in ("no-runc", "/opt/no/runc", "./runc"):
        error = FileNotFoundError(errno.ENOENT, "x", name)
        assert str(framework.exec_error(name, error, "")) == str(exec_error(name, error, ""))
        assert framework.look_path(name, "") == look_path(name, "")
