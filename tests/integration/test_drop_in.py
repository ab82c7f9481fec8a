"""The runtime name io.containerd.runc.v2, as containerd's own clients use it.

In the drop-in lane (`make test` runs it under containerd 1.6, 1.7 and 2.x:
PYRUNC_TEST_DROP_IN=1 and PYRUNC_TEST_CONTAINERD) pyrunc is installed as `containerd-shim-runc-v2`
first on containerd's PATH, and these tests check that pyrunc is what serves that name and that it
behaves there as the Go shim does; in the host lane the same tests check the Go shim itself.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from pyrunc.protos import shim_pb2
from tests.integration.conftest import IMAGE, unique_id
from tests.support import Containerd
from tests.support.names import CONTAINERD_VERSION, DROP_IN, RUNC_RUNTIME, RUNC_SHIM
from tests.support.shim_client import call


def shim_pid(ctd: Containerd, id: str) -> int:
    return int(call(ctd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid)


def test_the_runc_v2_runtime_is_served_by_the_lanes_shim(containerd: Containerd) -> None:
    id = unique_id("who")
    containerd.ctr("run", "-d", "--runtime", RUNC_RUNTIME, IMAGE, id, "sleep", "600")
    try:
        pid = shim_pid(containerd, id)
        exe = os.path.basename(os.path.realpath(f"/proc/{pid}/exe"))
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    finally:
        containerd.remove(id)
    if DROP_IN:
        assert exe.startswith("python"), exe
    else:
        assert exe == RUNC_SHIM, exe
    # Either way the process is titled as containerd started it: by the name it was run as.
    assert os.path.basename(title.split()[0]) == RUNC_SHIM, title
    assert f"-namespace {containerd.namespace} -id {id} " in title, title


def test_the_shims_log_lines_name_the_runtime_it_was_run_as(containerd: Containerd) -> None:
    """containerd copies a shim's log into its own; pyrunc's lines carry `runtime=<name>`."""
    if not DROP_IN:
        return  # the Go shim's lines name no runtime: nothing of pyrunc's to check here
    id = unique_id("logname")
    containerd.ctr("run", "--rm", "--runtime", RUNC_RUNTIME, IMAGE, id, "true")
    lines = [line for line in containerd.log_tail(400).splitlines()
             if "runtime=io.containerd." in line and f"container {id}" in line]
    assert lines, containerd.log_tail(40)
    assert all(f"runtime={RUNC_RUNTIME}" in line for line in lines), lines


def recording_runc(tmp_path: Path) -> tuple[Path, Path]:
    """A runc that writes each command line it is given to a file, then runs the real runc."""
    record = tmp_path / "runc-calls"
    wrapper = tmp_path / "my-runc"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexec runc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, record


def runc_verb(argv: list[str]) -> str:
    """The command of a runc command line, past runc's global options."""
    words = iter(argv)
    for word in words:
        if word in ("--root", "--log", "--log-format", "--criu"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return ""


def test_ctrs_runc_options_reach_runc(containerd: Containerd, tmp_path: Path) -> None:
    """`ctr --runc-binary/--runc-root`, which ctr sends only to io.containerd.runc.v2 (as
    containerd.runc.v1.Options), choose the runc binary and its root."""
    wrapper, record = recording_runc(tmp_path)
    root = tmp_path / "runc-root"
    id = unique_id("opts")
    result = containerd.ctr("run", "--rm", "--runtime", RUNC_RUNTIME, "--runc-binary",
                            str(wrapper), "--runc-root", str(root), IMAGE, id,
                            "sh", "-c", "echo through my runc; exit 7", check=False)
    assert (result.returncode, result.stdout) == (7, b"through my runc\n"), result.stderr
    calls = [line.split() for line in record.read_text().splitlines()]
    assert all(c[c.index("--root") + 1] == str(root / containerd.namespace) for c in calls), calls
    verbs = [runc_verb(c) for c in calls]
    assert verbs[:2] == ["create", "start"] and "delete" in verbs, verbs
    assert not (root / containerd.namespace / id).exists()


def test_runtime_info_through_containerd(containerd: Containerd, tmp_path: Path) -> None:
    """A Go client's RuntimeInfo (containerd 2.x: the task plugin's PluginInfo) runs `<shim>
    -info` with the options it is given: the lane's shim answers under the name containerd ran
    it as, with the options and runc's features."""
    import grpc
    from google.protobuf import any_pb2

    from pyrunc.protos import introspection_pb2, runc_options_pb2
    from tests.support.tasks_api import Tasks

    runc = shutil.which("runc")
    assert runc
    options = runc_options_pb2.Options(binary_name=runc, root=str(tmp_path / "root"))
    packed = any_pb2.Any(type_url="containerd.runc.v1.Options",
                         value=options.SerializeToString())
    with Tasks(containerd.address, containerd.namespace) as tasks:
        if CONTAINERD_VERSION != "2.x":  # the task plugin's PluginInfo came with containerd 2.0
            with pytest.raises(grpc.RpcError) as refused:
                tasks.runtime_info(RUNC_RUNTIME, packed)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            return
        info = introspection_pb2.RuntimeInfo.FromString(tasks.runtime_info(RUNC_RUNTIME, packed))
    assert info.name == RUNC_RUNTIME
    assert runc_options_pb2.Options.FromString(info.options.value) == options
    assert info.features.type_url.endswith("runtime-spec/1/features/Features")
    assert json.loads(info.features.value)["ociVersionMin"]
