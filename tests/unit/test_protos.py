"""The generated wire types: up to date, named like containerd's, byte-exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor_pb2, empty_pb2, timestamp_pb2

import pyrunc.protos
from pyrunc.protos import (
    events_pb2,
    forward_pb2,
    introspection_pb2,
    metrics_v1_pb2,
    metrics_v2_pb2,
    mount_pb2,
    runc_options_pb2,
    runctypes_pb2,
    shim_pb2,
    status_pb2,
    task_types_pb2,
    ttrpc_pb2,
)

REPO_PROTOS = Path(__file__).resolve().parents[2] / "protos"

# Go's zero time.Time, which containerd 1.6 always sends for "not exited".
GO_ZERO_SECONDS = -62135596800


# (a) committed modules are fresh, and the installed package is not stale


def test_committed_modules_match_fresh_generation() -> None:
    pytest.importorskip("grpc_tools")
    proc = subprocess.run(
        [sys.executable, str(REPO_PROTOS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_installed_modules_match_repository() -> None:
    installed = Path(pyrunc.protos.__file__).resolve().parent
    repo_modules = sorted(p.name for p in REPO_PROTOS.glob("*_pb2.py"))
    assert repo_modules
    stale = [
        name
        for name in repo_modules
        if not (installed / name).is_file()
        or (installed / name).read_bytes() != (REPO_PROTOS / name).read_bytes()
    ]
    assert not stale, f"reinstall the package; stale modules: {stale}"


# (b) full names as containerd registers them


@pytest.mark.parametrize(
    ("descriptor", "full_name"),
    [
        (ttrpc_pb2.Request.DESCRIPTOR, "ttrpc.Request"),
        (ttrpc_pb2.Response.DESCRIPTOR, "ttrpc.Response"),
        (ttrpc_pb2.KeyValue.DESCRIPTOR, "ttrpc.KeyValue"),
        (ttrpc_pb2.StringList.DESCRIPTOR, "ttrpc.StringList"),
        (status_pb2.Status.DESCRIPTOR, "google.rpc.Status"),
        (mount_pb2.Mount.DESCRIPTOR, "containerd.types.Mount"),
        (task_types_pb2.Status.DESCRIPTOR, "containerd.v1.types.Status"),
        (task_types_pb2.ProcessInfo.DESCRIPTOR, "containerd.v1.types.ProcessInfo"),
        (shim_pb2.DESCRIPTOR.services_by_name["Task"], "containerd.task.v2.Task"),
        (shim_pb2.CreateTaskRequest.DESCRIPTOR, "containerd.task.v2.CreateTaskRequest"),
        (shim_pb2.DeleteResponse.DESCRIPTOR, "containerd.task.v2.DeleteResponse"),
        (shim_pb2.ConnectResponse.DESCRIPTOR, "containerd.task.v2.ConnectResponse"),
        (events_pb2.TaskCreate.DESCRIPTOR, "containerd.events.TaskCreate"),
        (events_pb2.TaskExit.DESCRIPTOR, "containerd.events.TaskExit"),
        (events_pb2.TaskExecStarted.DESCRIPTOR, "containerd.events.TaskExecStarted"),
        (
            forward_pb2.DESCRIPTOR.services_by_name["Events"],
            "containerd.services.events.ttrpc.v1.Events",
        ),
        (
            forward_pb2.ForwardRequest.DESCRIPTOR,
            "containerd.services.events.ttrpc.v1.ForwardRequest",
        ),
        (forward_pb2.Envelope.DESCRIPTOR, "containerd.services.events.ttrpc.v1.Envelope"),
        (runc_options_pb2.Options.DESCRIPTOR, "containerd.runc.v1.Options"),
        (runc_options_pb2.CheckpointOptions.DESCRIPTOR, "containerd.runc.v1.CheckpointOptions"),
        (runc_options_pb2.ProcessDetails.DESCRIPTOR, "containerd.runc.v1.ProcessDetails"),
        (runctypes_pb2.RuncOptions.DESCRIPTOR, "containerd.linux.runc.RuncOptions"),
        (runctypes_pb2.CreateOptions.DESCRIPTOR, "containerd.linux.runc.CreateOptions"),
        (runctypes_pb2.CheckpointOptions.DESCRIPTOR, "containerd.linux.runc.CheckpointOptions"),
        (metrics_v1_pb2.Metrics.DESCRIPTOR, "io.containerd.cgroups.v1.Metrics"),
        (metrics_v2_pb2.Metrics.DESCRIPTOR, "io.containerd.cgroups.v2.Metrics"),
        (introspection_pb2.RuntimeInfo.DESCRIPTOR, "containerd.types.RuntimeInfo"),
        (introspection_pb2.RuntimeVersion.DESCRIPTOR, "containerd.types.RuntimeVersion"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_full_names(descriptor: object, full_name: str) -> None:
    assert descriptor.full_name == full_name  # type: ignore[attr-defined]


def test_status_enum_values() -> None:
    values = {v.name: v.number for v in task_types_pb2.Status.DESCRIPTOR.values}
    assert values == {
        "UNKNOWN": 0,
        "CREATED": 1,
        "RUNNING": 2,
        "STOPPED": 3,
        "PAUSED": 4,
        "PAUSING": 5,
    }


# (c) byte-exact encodings


def test_connect_request_vector() -> None:
    """protocol-facts.md 1.9: the data of the Connect Request frame."""
    expected = (
        b"\x0a\x17containerd.task.v2.Task"
        b"\x12\x07Connect"
        b"\x1a\x07" + b"\x0a\x05redis"
        b"\x2a\x25" + b"\x0a\x1acontainerd-namespace-ttrpc" + b"\x12\x07default"
    )
    assert len(expected) == 0x52
    req = ttrpc_pb2.Request(
        service="containerd.task.v2.Task",
        method="Connect",
        payload=shim_pb2.ConnectRequest(id="redis").SerializeToString(),
        metadata=[ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="default")],
    )
    assert req.SerializeToString() == expected

    parsed = ttrpc_pb2.Request.FromString(expected)
    assert parsed.timeout_nano == 0
    assert shim_pb2.ConnectRequest.FromString(parsed.payload).id == "redis"


def test_not_found_response_vector() -> None:
    """protocol-facts.md 1.9: the data of the NotFound Response frame."""
    expected = b"\x0a\x24" + b"\x08\x05" + b"\x12\x20container not created: not found"
    assert len(expected) == 0x26
    resp = ttrpc_pb2.Response(
        status=status_pb2.Status(code=5, message="container not created: not found")
    )
    assert resp.SerializeToString() == expected


def test_empty_success_response_is_zero_bytes() -> None:
    resp = ttrpc_pb2.Response(payload=empty_pb2.Empty().SerializeToString())
    assert resp.SerializeToString() == b""
    assert not ttrpc_pb2.Response.FromString(b"").HasField("status")


def test_create_task_request_bytes() -> None:
    options = any_pb2.Any(
        type_url="containerd.runc.v1.Options",
        value=runc_options_pb2.Options(binary_name="runc").SerializeToString(),
    )
    req = shim_pb2.CreateTaskRequest(
        id="redis",
        bundle="/b",
        rootfs=[
            mount_pb2.Mount(type="overlay", source="overlay", target="/r", options=["lowerdir=/l"])
        ],
        terminal=True,
        stdout="/o",
        options=options,
    )
    mount = (
        b"\x0a\x07overlay"  # type=1
        b"\x12\x07overlay"  # source=2
        b"\x1a\x02/r"  # target=3
        b"\x22\x0blowerdir=/l"  # options=4
    )
    assert len(mount) == 0x23
    any_bytes = (
        b"\x0a\x1acontainerd.runc.v1.Options"  # type_url=1
        b"\x12\x06"  # value=2, holding Options:
        b"\x32\x04runc"  # binary_name=6
    )
    assert len(any_bytes) == 0x24
    expected = b"".join(
        [
            b"\x0a\x05redis",  # id=1
            b"\x12\x02/b",  # bundle=2
            b"\x1a\x23",  # rootfs=3, then the Mount
            mount,
            b"\x20\x01",  # terminal=4
            b"\x32\x02/o",  # stdout=6
            b"\x52\x24",  # options=10, then the Any
            any_bytes,
        ]
    )
    assert req.SerializeToString() == expected
    assert shim_pb2.CreateTaskRequest.FromString(expected) == req


def test_task_exit_bytes() -> None:
    ev = events_pb2.TaskExit(
        container_id="c1",
        id="c1",
        pid=4242,
        exit_status=137,
        exited_at=timestamp_pb2.Timestamp(seconds=1700000000, nanos=5),
    )
    expected = (
        b"\x0a\x02c1"  # container_id=1
        b"\x12\x02c1"  # id=2
        b"\x18\x92\x21"  # pid=3: 4242
        b"\x20\x89\x01"  # exit_status=4: 137
        b"\x2a\x08"  # exited_at=5:
        b"\x08\x80\xe2\xcf\xaa\x06"  # seconds=1: 1700000000
        b"\x10\x05"  # nanos=2: 5
    )
    assert ev.SerializeToString() == expected


def test_go_zero_time_exited_at() -> None:
    resp = shim_pb2.DeleteResponse(
        pid=7, exit_status=0, exited_at=timestamp_pb2.Timestamp(seconds=GO_ZERO_SECONDS)
    )
    expected = (
        b"\x08\x07"  # pid=1
        b"\x1a\x0b"  # exited_at=3:
        b"\x08\x80\x92\xb8\xc3\x98\xfe\xff\xff\xff\x01"  # seconds=1, 10-byte varint
    )
    assert resp.SerializeToString() == expected


def test_envelope_bytes() -> None:
    req = forward_pb2.ForwardRequest(
        envelope=forward_pb2.Envelope(
            timestamp=timestamp_pb2.Timestamp(seconds=1),
            namespace="default",
            topic="/tasks/oom",
            event=any_pb2.Any(
                type_url="containerd.events.TaskOOM",
                value=events_pb2.TaskOOM(container_id="c").SerializeToString(),
            ),
        )
    )
    event = (
        b"\x0a\x19containerd.events.TaskOOM"  # type_url=1
        b"\x12\x03"  # value=2, holding TaskOOM:
        b"\x0a\x01c"  # container_id=1
    )
    envelope = (
        b"\x0a\x02\x08\x01"  # timestamp=1
        b"\x12\x07default"  # namespace=2
        b"\x1a\x0a/tasks/oom"  # topic=3
        b"\x22" + bytes([len(event)]) + event  # event=4
    )
    assert req.SerializeToString() == b"\x0a" + bytes([len(envelope)]) + envelope


def _numbers(message: object) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_checkpoint_path_numbers_are_swapped_between_packages() -> None:
    v1 = _numbers(runc_options_pb2.CheckpointOptions)
    legacy = _numbers(runctypes_pb2.CheckpointOptions)
    assert (v1["image_path"], v1["work_path"]) == (8, 9)
    assert (legacy["work_path"], legacy["image_path"]) == (8, 9)


def test_runc_options_numbers() -> None:
    assert _numbers(runc_options_pb2.Options) == {
        "no_pivot_root": 1,
        "no_new_keyring": 2,
        "shim_cgroup": 3,
        "io_uid": 4,
        "io_gid": 5,
        "binary_name": 6,
        "root": 7,
        "criu_path": 8,
        "systemd_cgroup": 9,
        "criu_image_path": 10,
        "criu_work_path": 11,
        "task_api_address": 12,
        "task_api_version": 13,
    }


# (d) the Task service


TASK_METHODS = {
    "State": ("StateRequest", "StateResponse"),
    "Create": ("CreateTaskRequest", "CreateTaskResponse"),
    "Start": ("StartRequest", "StartResponse"),
    "Delete": ("DeleteRequest", "DeleteResponse"),
    "Pids": ("PidsRequest", "PidsResponse"),
    "Pause": ("PauseRequest", None),
    "Resume": ("ResumeRequest", None),
    "Checkpoint": ("CheckpointTaskRequest", None),
    "Kill": ("KillRequest", None),
    "Exec": ("ExecProcessRequest", None),
    "ResizePty": ("ResizePtyRequest", None),
    "CloseIO": ("CloseIORequest", None),
    "Update": ("UpdateTaskRequest", None),
    "Wait": ("WaitRequest", "WaitResponse"),
    "Stats": ("StatsRequest", "StatsResponse"),
    "Connect": ("ConnectRequest", "ConnectResponse"),
    "Shutdown": ("ShutdownRequest", None),
}


def test_task_service_methods() -> None:
    service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
    assert [m.name for m in service.methods] == list(TASK_METHODS)
    for name, (req, resp) in TASK_METHODS.items():
        method = service.methods_by_name[name]
        assert method.full_name == f"containerd.task.v2.Task.{name}"
        assert method.input_type.full_name == f"containerd.task.v2.{req}"
        out = f"containerd.task.v2.{resp}" if resp else "google.protobuf.Empty"
        assert method.output_type.full_name == out


def test_services_are_unary() -> None:
    for module in (shim_pb2, forward_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for service in proto.service:
            for method in service.method:
                assert not method.client_streaming, method.name
                assert not method.server_streaming, method.name


def test_forward_method() -> None:
    method = forward_pb2.DESCRIPTOR.services_by_name["Events"].methods_by_name["Forward"]
    assert method.input_type.full_name == "containerd.services.events.ttrpc.v1.ForwardRequest"
    assert method.output_type.full_name == "google.protobuf.Empty"
