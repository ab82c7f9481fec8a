"""Pause/Resume, Update, Checkpoint/restore and runtime options, against real containerd and runc.

CRIU does not work on this machine, so checkpoint and restore run through a wrapper `runc` that
records its arguments and fails as CRIU does; everything else it passes to the real runc. The
wrapper is named as BinaryName in a runtime config file (`ctr --runtime-config-path`), which is
how CRI configures non-runc runtimes too. ctr sends a config file to any runtime name but
io.containerd.runc.v2 (to which it sends runc.v1 Options of its --runc-* flags instead), so these
tests name pyrunc by its own runtime name, under which it is installed in every lane.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pyrunc.protos import runc_options_pb2, runctypes_pb2, runtimeoptions_pb2, shim_pb2
from pyrunc.shim.ttrpc.status import TTRPCError
from tests.integration.conftest import IMAGE, both_runtimes, unique_id
from tests.support import Containerd, make_rootfs_dir
from tests.support.events import event_log
from tests.support.names import PYRUNC_OWN_RUNTIME, PYRUNC_RUNTIME
from tests.support.shim_client import bundle_of, call

FAKE_CRIU_ERROR = "criu failed: type NOTIFY errno 0 (no CRIU here)"
CONFIG_FILE_RUNTIME = PYRUNC_OWN_RUNTIME
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


@pytest.fixture
def fake_runc(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(wrapper, its argument log): checkpoint/restore fail like CRIU, the rest is real runc."""
    args = tmp_path / "runc-args"
    wrapper = tmp_path / "fake-runc"
    wrapper.write_text(f"""#!/bin/sh
echo "$@" >> {args}
prev=""; log=""
for a in "$@"; do [ "$prev" = "--log" ] && log="$a"; prev="$a"; done
for a in "$@"; do
  case "$a" in checkpoint|restore)
    echo '{{"level":"error","msg":"{FAKE_CRIU_ERROR}","time":"2026-01-01T00:00:00Z"}}' >> "$log"
    exit 1;;
  esac
done
exec {shutil.which("runc")} "$@"
""")
    wrapper.chmod(0o755)
    yield wrapper, args


def config_file(tmp_path: Path, **settings: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / f"runtime-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_container(ctd: Containerd, runtime: str, *extra: str) -> str:
    id = unique_id("api")
    ctd.ctr("run", "-d", "--runtime", runtime, *extra, IMAGE, id, "sleep", "600")
    return id






@both_runtimes
def test_pause_and_resume(containerd: Containerd, runtime: str) -> None:
    id = start_container(containerd, runtime)
    try:
        with event_log(containerd) as events:
            containerd.ctr("task", "pause", id)
            assert containerd.status(id) == "PAUSED"
            containerd.ctr("task", "resume", id)
            assert containerd.status(id) == "RUNNING"
            events.wait_for(id, "/tasks/resumed")
            assert events.topics_for(id) == ["/tasks/paused", "/tasks/resumed"]
    finally:
        containerd.remove(id)


def test_pause_of_a_paused_container_is_a_failed_precondition(containerd: Containerd) -> None:
    id = start_container(containerd, PYRUNC_RUNTIME)
    try:
        containerd.ctr("task", "pause", id)
        with pytest.raises(TTRPCError) as refused:
            call(containerd, id, "Pause", shim_pb2.PauseRequest(id=id))
        assert refused.value.code == 9
        assert f"container {id}: cannot pause a paused container" in refused.value.message
    finally:
        containerd.remove(id)


@both_runtimes
def test_update_applies_linux_resources(containerd: Containerd, runtime: str) -> None:
    id = start_container(containerd, runtime)
    try:
        resources = json.dumps({"memory": {"limit": 64 << 20}, "cpu": {"shares": 512}})
        call(containerd, id, "Update", shim_pb2.UpdateTaskRequest(
            id=id, resources=any_pb2.Any(type_url=RESOURCES_URL, value=resources.encode())))
        cgroup = Path("/sys/fs/cgroup/memory") / containerd.namespace / id
        assert int((cgroup / "memory.limit_in_bytes").read_text()) == 64 << 20
        cpu = Path("/sys/fs/cgroup/cpu") / containerd.namespace / id
        assert int((cpu / "cpu.shares").read_text()) == 512
    finally:
        containerd.remove(id)


def test_update_of_a_stopped_container_is_refused(containerd: Containerd) -> None:
    id = unique_id("upd")
    containerd.ctr("run", "-d", "--runtime", PYRUNC_RUNTIME, IMAGE, id, "true")
    try:
        containerd.wait_for_status(id, "STOPPED")
        with pytest.raises(TTRPCError) as refused:
            call(containerd, id, "Update", shim_pb2.UpdateTaskRequest(id=id))
        assert refused.value.code == 9
    finally:
        containerd.remove(id)


def test_runtime_config_file_sets_the_runc_binary_and_root(
        containerd: Containerd, tmp_path: Path, fake_runc: tuple[Path, Path]) -> None:
    wrapper, args = fake_runc
    root = Path("/run/pyrunc-test-root") / unique_id("root")
    config = config_file(tmp_path, BinaryName=str(wrapper), Root=str(root))
    id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
    try:
        assert (root / containerd.namespace / id / "state.json").exists()
        assert f"create --bundle {bundle_of(containerd, id)}" in args.read_text()
        assert f"--root {root / containerd.namespace}" in args.read_text()
    finally:
        containerd.remove(id)
        shutil.rmtree(root.parent, ignore_errors=True)
    assert not (root / containerd.namespace / id).exists()


def test_checkpoint_hands_runc_its_options_and_reports_criu_failure(
        containerd: Containerd, tmp_path: Path, fake_runc: tuple[Path, Path]) -> None:
    wrapper, args = fake_runc
    config = config_file(tmp_path, BinaryName=str(wrapper))
    id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
    try:
        result = containerd.ctr("task", "checkpoint", id, check=False)
        assert result.returncode != 0
        assert FAKE_CRIU_ERROR.encode() in result.stderr
        assert containerd.status(id) == "RUNNING"  # ctr resumed it; nothing half-done
        line = next(a for a in args.read_text().splitlines() if " checkpoint " in a)
        assert line.split(" checkpoint ", 1)[1].split() == [
            "--image-path", line.split("--image-path ")[1].split()[0],
            "--work-path", str(bundle_of(containerd, id) / "criu-work"),
            "--leave-running", id,
        ]
    finally:
        containerd.remove(id)


@pytest.mark.parametrize("kind", ["runc.v1", "linux.runc"])
def test_checkpoint_options_become_runc_flags(
        containerd: Containerd, tmp_path: Path, fake_runc: tuple[Path, Path], kind: str) -> None:
    wrapper, args = fake_runc
    config = config_file(tmp_path, BinaryName=str(wrapper))
    id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
    fields = dict(exit=True, open_tcp=True, external_unix_sockets=True, terminal=True,
                  file_locks=True, empty_namespaces=["network"], cgroups_mode="soft",
                  image_path=str(tmp_path / "image"), work_path=str(tmp_path / "work"))
    message = (runc_options_pb2.CheckpointOptions(**fields) if kind == "runc.v1"
               else runctypes_pb2.CheckpointOptions(**fields))
    try:
        with pytest.raises(TTRPCError) as failed:
            call(containerd, id, "Checkpoint", shim_pb2.CheckpointTaskRequest(
                id=id, options=any_pb2.Any(type_url=message.DESCRIPTOR.full_name,
                                           value=message.SerializeToString())))
        assert FAKE_CRIU_ERROR in failed.value.message
        assert f"container {id}" in failed.value.message
        line = next(a for a in args.read_text().splitlines() if " checkpoint " in a)
        assert line.split(" checkpoint ", 1)[1].split() == [
            "--image-path", str(tmp_path / "image"), "--work-path", str(tmp_path / "work"),
            "--tcp-established", "--ext-unix-sk", "--shell-job", "--file-locks",
            "--empty-ns", "network", "--manage-cgroups-mode", "soft", id,
        ]
    finally:
        containerd.remove(id)


def test_restore_failure_is_clear_and_leaves_nothing(
        containerd: Containerd, tmp_path: Path, fake_runc: tuple[Path, Path]) -> None:
    """Create-from-checkpoint and Start, driven straight at a running shim (ctr cannot)."""
    wrapper, args = fake_runc
    host = start_container(containerd, PYRUNC_RUNTIME)  # a shim to talk to
    restored = unique_id("restored")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    make_rootfs_dir(bundle / "rootfs")
    spec = json.loads((bundle_of(containerd, host) / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = f"/{containerd.namespace}/{restored}"
    (bundle / "config.json").write_text(json.dumps(spec))
    options = runtimeoptions_pb2.Options(config_body=f'BinaryName = "{wrapper}"\n'.encode())
    try:
        created = call(containerd, host, "Create", shim_pb2.CreateTaskRequest(
            id=restored, bundle=str(bundle), checkpoint=str(tmp_path / "image"),
            options=any_pb2.Any(type_url="runtimeoptions.v1.Options",
                                value=options.SerializeToString())))
        assert created.pid == 0
        with pytest.raises(TTRPCError) as failed:
            call(containerd, host, "Start", shim_pb2.StartRequest(id=restored))
        assert f"container {restored}: OCI runtime restore failed: {FAKE_CRIU_ERROR}" in (
            failed.value.message)
        line = next(a for a in args.read_text().splitlines() if " restore " in a)
        assert line.split(" restore ", 1)[1].split() == [
            "--detach", "--pid-file", str(bundle / "init.pid"), "--bundle", str(bundle),
            "--image-path", str(tmp_path / "image"), "--work-path", str(bundle / "criu-work"),
            restored,
        ]
        deleted = call(containerd, host, "Delete", shim_pb2.DeleteRequest(id=restored))
        assert deleted.pid == 0
        assert not os.path.exists(f"/run/containerd/runc/{containerd.namespace}/{restored}")
        # the shim still serves its first container
        assert call(containerd, host, "State", shim_pb2.StateRequest(id=host)).status == 2
    finally:
        containerd.remove(host)


def test_shim_cgroup_from_start_options(containerd: Containerd, tmp_path: Path) -> None:
    group = unique_id("shims")
    made: list[Path] = []
    id = ""
    try:
        for controller in ("memory", "pids"):
            path = Path("/sys/fs/cgroup") / controller / group
            path.mkdir()
            made.append(path)
        config = config_file(tmp_path, ShimCgroup=f"/{group}")
        id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
        shim_pid = call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
        cgroups = Path(f"/proc/{shim_pid}/cgroup").read_text()
        assert f":memory:/{group}\n" in cgroups
        assert f":pids:/{group}\n" in cgroups
    finally:
        if id:
            containerd.remove(id)
        deadline = time.monotonic() + 10
        for path in made:
            while True:
                try:
                    path.rmdir()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{path} still busy"
                    time.sleep(0.05)


def test_io_uid_and_gid_own_the_stdio_pipes(containerd: Containerd, tmp_path: Path) -> None:
    config = config_file(tmp_path, IoUid=1234, IoGid=2345)
    id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
    try:
        init = next(t.pid for t in containerd.tasks() if t.id == id)
        stdout = os.stat(f"/proc/{init}/fd/1")
        # runc then gives the process's own user the stdio (fixStdioPermissions), keeping the
        # group: so the uid reads 0 (the container's root) and the gid is still IoGid.
        assert (stdout.st_uid, stdout.st_gid) == (0, 2345)
    finally:
        containerd.remove(id)


def test_the_shim_is_a_likelier_oom_victim_than_containerd(containerd: Containerd) -> None:
    id = start_container(containerd, PYRUNC_RUNTIME)
    try:
        shim = call(containerd, id, "Connect", shim_pb2.ConnectRequest(id=id)).shim_pid
        ours = int(Path(f"/proc/{shim}/oom_score_adj").read_text())
        theirs = int(Path(f"/proc/{containerd.pid}/oom_score_adj").read_text())
        assert ours == min(theirs + 1, 1000)
    finally:
        containerd.remove(id)


def test_pivot_and_keyring_options_reach_runc(
        containerd: Containerd, tmp_path: Path, fake_runc: tuple[Path, Path]) -> None:
    wrapper, args = fake_runc
    config = config_file(tmp_path, BinaryName=str(wrapper), NoPivotRoot=True, NoNewKeyring=True)
    id = start_container(containerd, CONFIG_FILE_RUNTIME, "--runtime-config-path", str(config))
    try:
        create = next(a for a in args.read_text().splitlines() if " create " in a)
        assert "--no-pivot" in create.split() and "--no-new-keyring" in create.split()
        assert containerd.status(id) == "RUNNING"
    finally:
        containerd.remove(id)
