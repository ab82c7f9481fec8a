"""One wasm task's process: `python -I -m pyrunc.examples.wasm.runner BUNDLE STDIN STDOUT STDERR`.

The shim spawns it at Create with two pipes: fd 3, on which it reports one line ("ok", or why it
cannot run), and fd 4, which gets a byte at Start (end of file: the task was deleted first). In
between it meets containerd's client on the stdio fifos (pyrunc.shim.fifo), chroots into the
rootfs, so that the module and everything it opens resolve inside it, and compiles the module
named by `process.args[0]`. At Start it runs the module's `_start` with the rest of the spec's
process: `args`, `env`, and `cwd` (preopened as "." beside the rootfs as "/"). Its exit status is
the module's `proc_exit` code, 0 when `_start` returns, 134 on a trap (as the wasmtime CLI);
signals act on it as on any process (SIGKILL gives 137).
"""

from __future__ import annotations

import json
import os
import signal
import sys

REPORT_FD, GO_FD = 3, 4
TRAP_STATUS = 134  # 128 + SIGABRT, what the wasmtime command line exits with on a trap


def main(argv: list[str]) -> int:
    bundle, stdin, stdout, stderr = argv
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's handler cannot stop a running module
    try:
        import wasmtime
    except ImportError as e:
        _report(f"wasmtime is not installed (pyrunc's wasm extra): {e}")
        return 1
    from pyrunc.shim.errors import describe
    from pyrunc.shim.fifo import StdioError, open_stdio

    what, op = "the task", "open"
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        process = spec.get("process") or {}
        args = [str(a) for a in process.get("args") or []]
        if not args:
            raise ValueError("the spec's process.args is empty: no module to run")
        what = args[0]
        root = (spec.get("root") or {}).get("path") or "rootfs"
        stdio = open_stdio(stdin, stdout, stderr)
        op = "chroot"
        os.chroot(os.path.join(bundle, root))  # (an absolute root.path stays as it is)
        cwd = process.get("cwd") or "/"
        op = "chdir"
        os.chdir(cwd)
        op = "open"
        engine = wasmtime.Engine()
        with open(args[0], "rb") as f:
            module = wasmtime.Module(engine, f.read())
    except OSError as e:
        _report(f"cannot run {what}: {describe(e, op)}")
        return 1
    except (ValueError, StdioError, wasmtime.WasmtimeError) as e:
        _report(f"cannot run {what}: {e}")
        return 1
    _report("ok")
    if os.read(GO_FD, 1) != b"\x01":
        return 0  # deleted before Start
    os.close(GO_FD)
    stdio.install()
    config = wasmtime.WasiConfig()
    config.argv = args
    config.env = [tuple(e.split("=", 1)) for e in process.get("env") or [] if "=" in e]
    config.inherit_stdin()
    config.inherit_stdout()
    config.inherit_stderr()
    config.preopen_dir("/", "/")
    if cwd != "/":
        config.preopen_dir(".", ".")
    store = wasmtime.Store(engine)
    store.set_wasi(config)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    try:
        instance = linker.instantiate(store, module)
        start = instance.exports(store)["_start"]
        start(store)  # type: ignore[operator]
    except wasmtime.ExitTrap as e:
        return int(e.code)
    except (wasmtime.Trap, wasmtime.WasmtimeError, KeyError) as e:
        os.write(2, f"wasm: {e}\n".encode())
        return TRAP_STATUS
    return 0


def _report(line: str) -> None:
    os.write(REPORT_FD, line.replace("\n", " ").encode() + b"\n")
    os.close(REPORT_FD)


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))  # no interpreter teardown: wasmtime's threads may still run
