"""The wasm example's runner on its own: its report line, its wait for Start, its exit status.

It is run the way the shim runs it, through the framework's spawn (`python -I -m
pyrunc.examples.wasm.runner BUNDLE STDIN STDOUT STDERR`, the report pipe as fd 3, the start pipe as
fd 4), on a bundle made here. It chroots, so this needs root, as every shim test does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import wasmtime  # the wasm extra, which `make install` installs

from pyrunc.shim.spawn import exit_status, spawn

EXIT_WITH = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const {code}))))"""
RETURNS = """(module (memory (export "memory") 1) (func (export "_start")))"""
TRAPS = """(module (memory (export "memory") 1) (func (export "_start") unreachable))"""


def _bundle(tmp_path: Path, modules: dict[str, str], args: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    for name, wat in modules.items():
        (rootfs / name).write_bytes(bytes(wasmtime.wat2wasm(wat)))
    spec = {"root": {"path": "rootfs"}, "process": {"args": args, "cwd": "/", "env": []}}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _run(bundle: Path, start: bool, stderr: str = "") -> tuple[str, int]:
    """(the report line, the exit status) of one runner; Start is sent when `start`."""
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()

    pid = spawn([sys.executable, "-I", "-m", "pyrunc.examples.wasm.runner", str(bundle), "",
                 "", stderr], extra_fds=(report_w, go_r))  # as the shim's reaper spawns it
    os.close(report_w)
    os.close(go_r)
    with os.fdopen(report_r) as report:
        line = report.readline().strip()
    if start and line == "ok":
        os.write(go_w, b"\x01")
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    return line, exit_status(status)


def test_proc_exit_is_the_exit_status_and_a_return_is_zero(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {"three.wasm": EXIT_WITH.format(code=3), "ok.wasm": RETURNS},
                     ["/three.wasm"])
    assert _run(bundle, start=True) == ("ok", 3)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["ok.wasm"]  # relative to cwd, inside the rootfs
    (bundle / "config.json").write_text(json.dumps(spec))
    assert _run(bundle, start=True) == ("ok", 0)


def test_a_trap_exits_134_and_says_why_on_stderr(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {"trap.wasm": TRAPS}, ["/trap.wasm"])
    log = tmp_path / "stderr"
    assert _run(bundle, start=True, stderr=f"file://{log}") == ("ok", 134)
    assert log.read_text().startswith("wasm: ")


def test_a_task_deleted_before_start_exits_without_running(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {"three.wasm": EXIT_WITH.format(code=3)}, ["/three.wasm"])
    assert _run(bundle, start=False) == ("ok", 0)


def test_what_cannot_run_is_reported_in_gos_words(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {"bad.wasm": RETURNS}, ["/missing.wasm"])
    assert _run(bundle, start=True) == (
        "cannot run /missing.wasm: open /missing.wasm: no such file or directory", 1)
    (bundle / "rootfs" / "bad.wasm").write_bytes(b"not wasm")
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["/bad.wasm"]
    (bundle / "config.json").write_text(json.dumps(spec))
    line, status = _run(bundle, start=True)
    assert line.startswith("cannot run /bad.wasm: ") and status == 1
    spec["process"]["args"] = []
    (bundle / "config.json").write_text(json.dumps(spec))
    assert _run(bundle, start=True) == (
        "cannot run the task: the spec's process.args is empty: no module to run", 1)
