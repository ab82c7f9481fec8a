"""The example wasm shim (examples/wasm, containerd-shim-pywasm-v1) under containerd 1.6 and 2.x.

The modules are compiled here from WAT text with wasmtime (the `wasm` extra), put in a rootfs
directory for `ctr run --rootfs` and in an image layer, and run through a private containerd of
each version, each in a namespace of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import unique_id
from tests.support import Containerd
from tests.support.events import event_log
from tests.support.image import Entry, build_image
from tests.support.names import containerd_binaries

RUNTIME = "io.containerd.pywasm.v1"
SHIM = "containerd-shim-pywasm-v1"
RUNNER = "pyrunc.examples.wasm.runner"
# What a test may leave behind: the shims, and the runner process of each task.
PROCESSES = (SHIM, RUNNER)
WASM_IMAGE = "localhost/pyrunc/wasm:latest"

_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; 0: an iovec, 8: a count, 12/16: sizes, 32: " \\n", 64: a file name, 1024: pointers,
  ;; 4096: a read buffer, 16384: strings
  (data (i32.const 32) " \\n")
  (data (i32.const 64) "greeting.txt")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $n))
  ;; the strings from pointer $first to $count, each but the last followed by the byte at $sep
  (func $print (param $first i32) (param $count i32) (param $sep i32) (local $p i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $first) (local.get $count)))
      (local.set $p
        (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $first) (i32.const 2)))))
      (call $write (local.get $p) (call $strlen (local.get $p)))
      (local.set $first (i32.add (local.get $first) (i32.const 1)))
      (if (i32.lt_u (local.get $first) (local.get $count))
        (then (call $write (local.get $sep) (i32.const 1))))
      (br $next)))
    (call $write (i32.const 33) (i32.const 1)))
  ;; copy fd $fd to stdout until end of file
  (func $copy (param $fd i32) (local $n i32)
    (block $done (loop $next
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 4096))
      (br_if $done (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $done (i32.eqz (local.get $n)))
      (call $write (i32.const 4096) (local.get $n))
      (br $next))))
"""
MODULES = {
    # its arguments after the first on one line, then its environment, a variable a line
    "echo.wasm": """
  (func (export "_start")
    (drop (call $args_sizes (i32.const 12) (i32.const 16)))
    (drop (call $args_get (i32.const 1024) (i32.const 16384)))
    (call $print (i32.const 1) (i32.load (i32.const 12)) (i32.const 32))
    (drop (call $env_sizes (i32.const 12) (i32.const 16)))
    (drop (call $env_get (i32.const 1024) (i32.const 16384)))
    (call $print (i32.const 0) (i32.load (i32.const 12)) (i32.const 33)))""",
    # /greeting.txt through the preopened rootfs (fd 3), then stdin
    "cat.wasm": """
  (func (export "_start")
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 1) (i32.const 64) (i32.const 12)
                       (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
      (then (call $copy (i32.load (i32.const 12)))))
    (call $copy (i32.const 0)))""",
    "exit3.wasm": """
  (func (export "_start")
    (call $write (i32.const 64) (i32.const 8))
    (call $proc_exit (i32.const 3)))""",
    "loop.wasm": """
  (func (export "_start") (loop $forever (br $forever)))""",
}


def _compile() -> dict[str, bytes]:
    import wasmtime  # the wasm extra; imported here so that collection needs no wasmtime

    return {name: bytes(wasmtime.wat2wasm(f"(module {_IMPORTS} {body})"))
            for name, body in MODULES.items()}


@pytest.fixture(scope="module")
def modules() -> dict[str, bytes]:
    return _compile()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory, modules: dict[str, bytes]) -> Path:
    root = tmp_path_factory.mktemp("wasm-rootfs")
    for name, wasm in modules.items():
        (root / name).write_bytes(wasm)
    (root / "greeting.txt").write_text("hello from the rootfs\n")
    return root


@pytest.fixture(scope="module", params=["1.6", "2.x"])
def ctd(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        modules: dict[str, bytes]) -> Iterator[Containerd]:
    try:
        binary, ctr = containerd_binaries(request.param)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    daemon = Containerd(namespace=f"pywasm-{request.param.replace('.', '')}",
                        containerd_binary=binary, ctr_binary=ctr)
    with daemon:
        entries = [Entry(name, "file", 0o644, wasm) for name, wasm in modules.items()]
        tar = build_image(tmp_path_factory.mktemp("image") / "wasm.tar", WASM_IMAGE, entries,
                          ["/echo.wasm", "from", "the", "image"])
        daemon.import_image(tar, WASM_IMAGE)
        yield daemon
        found = daemon.wait_no_leftovers(PROCESSES, timeout=10)
        daemon.cleanup_leftovers(PROCESSES)
        assert found == [], f"left behind under containerd {request.param}: {found}"


def run(ctd: Containerd, rootfs: Path, *args: str, input: bytes = b"",
        flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    """`ctr run --rm --rootfs ROOTFS ID ARGS…` (ctr's --rootfs is a switch: the rootfs takes the
    image's place)."""
    return ctd.ctr("run", "--rm", "--runtime", RUNTIME, *flags, "--rootfs", str(rootfs), *args,
                   check=False, input=input)


def test_a_module_prints_its_arguments_and_environment(ctd: Containerd, rootfs: Path) -> None:
    result = run(ctd, rootfs, unique_id("w"), "/echo.wasm", "a", "b",
                 flags=("--env", "GREETING=hi there"))
    assert result.returncode == 0, result.stderr
    first, *env = result.stdout.decode().splitlines()
    assert first == "a b"
    assert "GREETING=hi there" in env


def test_the_rootfs_is_preopened_as_root_and_stdin_reaches_the_module(
        ctd: Containerd, rootfs: Path) -> None:
    result = run(ctd, rootfs, unique_id("w"), "/cat.wasm", input=b"and from stdin\n")
    assert (result.returncode, result.stdout) == (
        0, b"hello from the rootfs\nand from stdin\n"), result.stderr


def test_proc_exit_gives_the_exit_code(ctd: Containerd, rootfs: Path) -> None:
    result = run(ctd, rootfs, unique_id("w"), "/exit3.wasm")
    assert (result.returncode, result.stdout) == (3, b"greeting"), result.stderr


def test_a_module_from_an_image_layer_runs_from_its_overlay_mounts(ctd: Containerd) -> None:
    result = ctd.ctr("run", "--rm", "--runtime", RUNTIME, WASM_IMAGE, unique_id("w"),
                     check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == "from the image"
    id = unique_id("w")
    result = ctd.ctr("run", "--rm", "--runtime", RUNTIME, WASM_IMAGE, id, "/echo.wasm", "x",
                     check=False)
    assert result.stdout.decode().splitlines()[0] == "x", result.stderr


def test_a_module_that_loops_forever_is_killed_by_sigkill_with_137(
        ctd: Containerd, rootfs: Path) -> None:
    id = unique_id("w")
    with event_log(ctd) as events:
        proc = subprocess.Popen(
            [ctd.ctr_binary, "-a", ctd.address, "-n", ctd.namespace, "run", "--rm",
             "--runtime", RUNTIME, "--rootfs", str(rootfs), id, "/loop.wasm"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ctd.wait_for_status(id, "RUNNING")
            time.sleep(0.3)
            assert ctd.status(id) == "RUNNING"  # still looping
            ctd.ctr("task", "kill", "-s", "SIGKILL", id)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 137, stderr
        events.wait_for(id, "/tasks/delete")
        assert [t for t in events.topics_for(id) if t.startswith("/tasks/")] == [
            "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


def test_containerd_restarts_with_a_wasm_task_running_and_gets_it_back(
        ctd: Containerd, rootfs: Path) -> None:
    id = unique_id("w")
    ctd.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(rootfs), id, "/loop.wasm")
    try:
        ctd.restart()
        assert ctd.status(id) == "RUNNING"
        ctd.ctr("task", "kill", "-s", "SIGKILL", id)
        ctd.wait_for_status(id, "STOPPED")
    finally:
        ctd.remove(id)
    assert id not in ctd.containers()


def test_what_wasm_cannot_do_is_unimplemented_with_a_clear_message(
        ctd: Containerd, rootfs: Path) -> None:
    id = unique_id("w")
    ctd.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(rootfs), id, "/loop.wasm")
    try:
        execed = ctd.ctr("task", "exec", "--exec-id", "e", id, "/echo.wasm", check=False)
        assert execed.returncode != 0
        assert b"Exec is not supported by the WebAssembly shim (pywasm)" in execed.stderr
        paused = ctd.ctr("task", "pause", id, check=False)
        assert b"Pause is not supported by the WebAssembly shim" in paused.stderr
        assert ctd.status(id) == "RUNNING"
    finally:
        ctd.ctr("task", "kill", "-s", "SIGKILL", id, check=False)
        ctd.wait_for_status(id, "STOPPED")
        ctd.remove(id)


def test_a_missing_module_fails_create_naming_it_and_leaves_nothing(
        ctd: Containerd, rootfs: Path) -> None:
    id = unique_id("w")
    result = run(ctd, rootfs, id, "/missing.wasm")
    assert result.returncode != 0
    assert b"cannot run /missing.wasm: open /missing.wasm: no such file or directory" in \
        result.stderr, result.stderr
    ctd.ctr("container", "rm", id, check=False)
    assert ctd.wait_no_leftovers(PROCESSES, timeout=10) == []


def test_a_killed_shim_takes_its_running_module_with_it(ctd: Containerd, rootfs: Path) -> None:
    id = unique_id("w")
    ctd.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(rootfs), id, "/loop.wasm")
    try:
        runner = next(t.pid for t in ctd.tasks() if t.id == id)
        assert RUNNER.encode() in Path(f"/proc/{runner}/cmdline").read_bytes()
        shims = [p for p in _pids() if " ".join(_argv(p)).startswith(f"{SHIM} ")
                 and f" -id {id} " in " ".join(_argv(p))]
        assert len(shims) == 1, shims
        with event_log(ctd) as events:
            os.kill(shims[0], signal.SIGKILL)
            events.wait_for(id, "/tasks/delete", timeout=15)  # containerd ran `delete`
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{runner}"):  # the delete action killed it
            assert time.monotonic() < deadline, f"runner {runner} outlived its shim"
            time.sleep(0.05)
        assert ctd.status(id) is None
    finally:
        ctd.remove(id)


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
