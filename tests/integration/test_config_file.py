"""The host configuration file (docs/operations.md), under a private containerd whose environment
names it with PYRUNC_CONFIG: each setting's effect, and what a bad file does (and does not do)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd, build_busybox_image
from tests.support.containerd import remove_cached_settings, warm_parents
from tests.support.names import ALL_SHIMS, PYRUNC_OWN_RUNTIME

RUNTIME = PYRUNC_OWN_RUNTIME


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "config.toml"


@pytest.fixture(scope="module")
def ctd(conf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    daemon = Containerd(namespace="pyrunc-config", env={"PYRUNC_CONFIG": str(conf)})
    with daemon:
        tar = build_busybox_image(tmp_path_factory.mktemp("image") / "busybox.tar", IMAGE)
        daemon.import_image(tar, IMAGE)
        yield daemon
        found = daemon.wait_no_leftovers(ALL_SHIMS, timeout=10)
        daemon.cleanup_leftovers(ALL_SHIMS)
        remove_cached_settings(conf)
        assert found == [], found



@pytest.fixture(autouse=True)
def clean(ctd: Containerd, conf: Path) -> Iterator[list[str]]:
    """Ids a test started, removed after it; the file is removed too, then nothing may be left."""
    ids: list[str] = []
    yield ids
    for id in ids:
        ctd.remove(id)
    conf.unlink(missing_ok=True)
    assert ctd.wait_no_leftovers(ALL_SHIMS, timeout=10) == []


def detached(ctd: Containerd, ids: list[str], *extra: str, args: tuple[str, ...] = ("sleep", "600")
             ) -> str:
    id = unique_id("cfg")
    ids.append(id)
    ctd.ctr("run", "-d", "--runtime", RUNTIME, *extra, IMAGE, id, *args)
    return id


def shim_pid(ctd: Containerd, id: str) -> int:
    (pid,) = [p for p in ctd.shim_processes() if f" -id {id} " in _cmdline(p) + " "]
    return pid


def forked(ctd: Containerd, ids: list[str], conf: Path) -> int:
    """The shim of a new container that a warm parent forked: a spawned shim still has start's
    environment block (PYRUNC_CONFIG among it), a forked one its parent's. The first start after
    a parent is wanted spawns its shim and the parent; the next ones are forked once it serves."""
    deadline = time.monotonic() + 30
    while True:
        pid = shim_pid(ctd, detached(ctd, ids))
        if f"PYRUNC_CONFIG={conf}".encode() not in _environ(pid):
            return pid
        assert time.monotonic() < deadline, "no shim was forked from a warm parent"
        time.sleep(0.5)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


# --- a bad file ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ('grouping = "pods"\n',
     'grouping: expected one of "pod", "container", "namespace", got "pods"'),
    ("[warm]\nidle_timeout = \"5m\"\n", 'warm.idle_timeout: expected a number, got a string "5m"'),
    ("[runc]\nbinary = \"crun\"\n", 'unknown key "runc.binary" (known: '),
    ("[warm\n", "not TOML: "),
    (None, "read {conf}: is a directory"),
])
def test_a_bad_file_fails_start_naming_it_and_starts_nothing(
        ctd: Containerd, conf: Path, clean: list[str], text: str | None, expected: str) -> None:
    if text is None:
        conf.mkdir()
    else:
        conf.write_text(text)
    try:
        id = unique_id("bad")
        shims_before = ctd.shim_processes()
        result = ctd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, id, "true", check=False)
        assert result.returncode != 0
        message = f"pyrunc start {id}: configuration {conf}: {expected.format(conf=conf)}"
        assert message.encode() in result.stderr, result.stderr
        assert ctd.shim_processes() == shims_before  # nothing was started
        ctd.ctr("container", "rm", id, check=False)
        assert ctd.leftovers(ALL_SHIMS) == []
    finally:
        if conf.is_dir():
            conf.rmdir()


# --- grouping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("grouping", "annotated", "shims"), [
    (None, False, 3),        # the default, "pod": a shim per container without the labels
    ("pod", True, 1),        # the Go shim's group annotation puts them in one
    ("container", True, 3),  # labels ignored
    ("namespace", False, 1),  # one shim for the whole namespace
])
def test_how_many_shims_serve_three_containers(
        ctd: Containerd, conf: Path, clean: list[str], grouping: str | None, annotated: bool,
        shims: int) -> None:
    if grouping is not None:
        conf.write_text(f'grouping = "{grouping}"\n')
    group = unique_id("group")
    extra = (f"--annotation=io.containerd.runc.v2.group={group}",) if annotated else ()
    ids = [detached(ctd, clean, *extra) for _ in range(3)]
    # (A shim is titled after the container it was started for; the others share it.)
    assert len(ctd.shim_processes()) == shims, [_cmdline(p) for p in ctd.shim_processes()]
    assert ctd.ctr("task", "exec", "--exec-id", "e", ids[-1], "echo", "ok").stdout == b"ok\n"


# --- [warm] ------------------------------------------------------------------------------------


def test_without_the_warm_parent_shims_are_spawned_and_no_parent_is_started(
        ctd: Containerd, conf: Path, clean: list[str]) -> None:
    conf.write_text("[warm]\nenabled = false\n")
    before = warm_parents()
    id = detached(ctd, clean)
    # A spawned shim still has start's environment block; a forked one has its parent's.
    assert f"PYRUNC_CONFIG={conf}".encode() in _environ(shim_pid(ctd, id))
    assert warm_parents() - before == set()
    conf.unlink()
    forked(ctd, clean, conf)  # the check can tell: with the parent on, shims are forked again


def test_a_warm_parent_with_a_short_idle_timeout_exits_after_it(
        ctd: Containerd, conf: Path, clean: list[str]) -> None:
    conf.write_text("[warm]\nidle_timeout = 2\n")
    ctd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, unique_id("cfg"), "true")  # starts it
    # Timed from when it serves (its socket is there): it warms up first, which takes much
    # longer than 2 s under the cgroup v2 lane's emulation. It forked nothing, so it is idle
    # from then on; the default parent would wait 300 s.
    deadline = time.monotonic() + 120
    while not list(Path("/run/pyrunc").glob("warm-*-t2.sock")):
        assert time.monotonic() < deadline, "no warm parent with the configured timeout serves"
        time.sleep(0.05)
    serving = time.monotonic()
    assert [p for p in warm_parents() if "--idle-exit=2 " in _cmdline(p) + " "]
    while [p for p in warm_parents() if "--idle-exit=2 " in _cmdline(p) + " "]:
        assert time.monotonic() - serving < 30, "the warm parent outlived its idle timeout"
        time.sleep(0.05)
    assert time.monotonic() - serving >= 1.5  # it did wait for its timeout
    assert not list(Path("/run/pyrunc").glob("warm-*-t2.sock"))  # and removed its socket


def _mergeable_regions(pid: int) -> int:
    return sum(1 for line in Path(f"/proc/{pid}/smaps").read_text().splitlines()
               if line.startswith("VmFlags:") and " mg" in line)


def test_ksm_off_leaves_the_shims_memory_unmarked(
        ctd: Containerd, conf: Path, clean: list[str]) -> None:
    conf.write_text("[warm]\nksm = false\n")
    unmarked = forked(ctd, clean, conf)
    assert [p for p in warm_parents() if "--ksm=0 " in _cmdline(p) + " "]
    assert _mergeable_regions(unmarked) == 0
    conf.unlink()
    assert _mergeable_regions(forked(ctd, clean, conf)) > 0  # the default parent's shims


# --- log_level ---------------------------------------------------------------------------------


def _shim_lines(ctd: Containerd, id: str) -> list[str]:
    return [line for line in ctd.log_path.read_text().splitlines()
            if f"container {id}:" in line and "runtime=io.containerd.pyrunc.v1" in line]


def test_log_level_sets_what_the_shims_log(ctd: Containerd, conf: Path, clean: list[str]) -> None:
    id = unique_id("cfg")
    ctd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, id, "true")
    assert any("level=info" in line for line in _shim_lines(ctd, id))  # the default: info
    conf.write_text('log_level = "warn"\n')
    quiet = unique_id("cfg")
    ctd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, quiet, "true")
    assert _shim_lines(ctd, quiet) == []


# --- [runc] --------------------------------------------------------------------------------------


@pytest.fixture
def wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A runc that notes each call, then runs runc."""
    calls = tmp_path / "calls"
    script = tmp_path / "noting-runc"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec runc "$@"\n')
    script.chmod(0o755)
    return script, calls


def test_runc_defaults_apply_when_containerd_sends_no_options(
        ctd: Containerd, conf: Path, clean: list[str], wrapper: tuple[Path, Path],
        tmp_path: Path) -> None:
    script, calls = wrapper
    root = tmp_path / "runc-root"
    conf.write_text(f'[runc]\nbinary_name = "{script}"\nroot = "{root}"\n')
    id = detached(ctd, clean)
    assert "create --bundle" in calls.read_text()
    assert (root / ctd.namespace / id).is_dir()  # runc's state is under the configured root
    ctd.remove(id)
    clean.remove(id)
    assert not (root / ctd.namespace / id).exists()  # and deleted from there


def test_containerds_options_win_over_the_runc_defaults(
        ctd: Containerd, conf: Path, clean: list[str], wrapper: tuple[Path, Path],
        tmp_path: Path) -> None:
    script, calls = wrapper
    conf.write_text(f'[runc]\nbinary_name = "{script}"\n')
    options = tmp_path / "runc.toml"  # what CRI sends for a runtime's ConfigPath option
    options.write_text('BinaryName = "runc"\n')
    detached(ctd, clean, "--runtime-config-path", str(options))
    assert not calls.exists()
    detached(ctd, clean)  # and without options, the default applies
    assert calls.exists()


def test_a_changed_file_applies_to_shims_started_after_it(
        ctd: Containerd, conf: Path, clean: list[str], wrapper: tuple[Path, Path]) -> None:
    script, calls = wrapper
    before = detached(ctd, clean)
    conf.write_text(f'[runc]\nbinary_name = "{script}"\n')
    assert ctd.ctr("task", "exec", "--exec-id", "e", before, "echo", "a").stdout == b"a\n"
    assert not calls.exists()  # the running shim keeps the settings it started with
    detached(ctd, clean)
    assert calls.exists()
    assert os.path.getsize(calls) > 0
