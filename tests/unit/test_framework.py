"""The framework runs a shim that is not the runc shim: tests/unit/minimal_shim.py, built on the
public API alone, answers -v, serves its own ttrpc service as a long-running shim (with the
framework's reaper, publisher and shutdown), and has its delete hook's pid reported."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pyrunc.protos import empty_pb2, shim_pb2
from pyrunc.shim import __version__
from pyrunc.shim.ttrpc.client import Client

ROOT = str(Path(__file__).resolve().parents[2])  # where `tests` imports from


def minimal_shim(*args: str, cwd: Path, **kw: object) -> subprocess.Popen[bytes]:
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = "
            "'containerd-shim-minimal-v1'\nfrom tests.unit.minimal_shim import main\nmain()\n")
    return subprocess.Popen([sys.executable, "-c", code, ROOT, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def test_the_minimal_shim_answers_version_as_its_own_runtime(tmp_path: Path) -> None:
    out, err = minimal_shim("-v", cwd=tmp_path).communicate(timeout=30)
    assert out.decode() == (f"containerd-shim-minimal-v1:\n  Version: {__version__}\n"
                            "  Runtime: io.containerd.minimal.v1\n"), err


def test_the_minimal_shim_serves_its_service_and_shuts_down(tmp_path: Path) -> None:
    socket_path = tmp_path / "shim.sock"
    env = {"PATH": "/usr/bin:/bin", "TTRPC_ADDRESS": str(tmp_path / "no-containerd.ttrpc")}
    shim = minimal_shim("-namespace", "ns", "-id", "c1", "-address", "/nowhere",
                        "-socket", str(socket_path), cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert shim.poll() is None, shim.communicate()
            assert time.monotonic() < deadline, "the shim never listened"
            time.sleep(0.01)
        client = Client.connect(f"unix://{socket_path}", timeout=10)
        try:
            connected = client.call("containerd.task.v2.Task", "Connect",
                                    shim_pb2.ConnectRequest(id="c1"), shim_pb2.ConnectResponse,
                                    timeout=10)
            assert (connected.shim_pid, connected.version) == (shim.pid,
                                                              "io.containerd.minimal.v1")
            client.call("containerd.task.v2.Task", "Shutdown",
                        shim_pb2.ShutdownRequest(id="c1"), empty_pb2.Empty, timeout=10)
        finally:
            client.close()
        assert shim.wait(timeout=30) == 0, shim.communicate()
        assert not socket_path.exists()  # removed on the way out
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
        shim.stdout.close()  # type: ignore[union-attr]
        shim.stderr.close()  # type: ignore[union-attr]


def test_the_minimal_shims_delete_hook_gives_the_pid_of_the_response(tmp_path: Path) -> None:
    out, err = minimal_shim("-namespace", "ns", "-id", "c1", "-bundle", str(tmp_path),
                            "delete", cwd=tmp_path).communicate(timeout=30)
    # DeleteResponse: pid (field 1) 4242, exit_status (field 2) 137, then exited_at.
    assert out.startswith(b"\x08\x92\x21\x10\x89\x01"), err
