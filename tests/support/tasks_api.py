"""containerd's own Tasks API over gRPC, for what `ctr` does not send the way Go clients do.

(And the one Introspection call a Go client makes for a runtime: RuntimeInfo.)

containerd's Go client (`task.Exec(ctx, id, spec, cio.NewCreator(cio.WithTerminal))`) asks for a
terminal in ExecProcessRequest.terminal and leaves the process spec's own `terminal` as it is;
`ctr task exec -t` sets both. These calls go to containerd (which hands them to the shim), just as
a Go client's would.

The few messages needed are declared here from containerd's `api/services/tasks/v1/tasks.proto`
(same names and field numbers), so the shim's own generated modules stay out of the tests' way.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    empty_pb2,
    message_factory,
    timestamp_pb2,
)

SERVICE = "containerd.services.tasks.v1.Tasks"
PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"

_FIELD = descriptor_pb2.FieldDescriptorProto
_STRING, _BOOL, _UINT32, _MESSAGE = _FIELD.TYPE_STRING, _FIELD.TYPE_BOOL, _FIELD.TYPE_UINT32, \
    _FIELD.TYPE_MESSAGE

# name -> [(field, number, type, message type name[, repeated])], as in tasks.proto
_MESSAGES: dict[str, list[tuple[Any, ...]]] = {
    "ExecProcessRequest": [
        ("container_id", 1, _STRING, ""), ("stdin", 2, _STRING, ""), ("stdout", 3, _STRING, ""),
        ("stderr", 4, _STRING, ""), ("terminal", 5, _BOOL, ""),
        ("spec", 6, _MESSAGE, ".google.protobuf.Any"), ("exec_id", 7, _STRING, ""),
    ],
    "StartRequest": [("container_id", 1, _STRING, ""), ("exec_id", 2, _STRING, "")],
    "StartResponse": [("pid", 1, _UINT32, "")],
    "WaitRequest": [("container_id", 1, _STRING, ""), ("exec_id", 2, _STRING, "")],
    "WaitResponse": [
        ("exit_status", 1, _UINT32, ""), ("exited_at", 2, _MESSAGE, ".google.protobuf.Timestamp"),
    ],
    "DeleteProcessRequest": [("container_id", 1, _STRING, ""), ("exec_id", 2, _STRING, "")],
    # containerd.services.introspection.v1 (2.x), and containerd.types.RuntimeRequest
    "PluginInfoRequest": [
        ("type", 1, _STRING, ""), ("id", 2, _STRING, ""),
        ("options", 3, _MESSAGE, ".google.protobuf.Any"),
    ],
    "PluginInfoResponse": [("extra", 2, _MESSAGE, ".google.protobuf.Any")],  # (1: the plugin)
    "RuntimeRequest": [
        ("runtime_path", 1, _STRING, ""), ("options", 2, _MESSAGE, ".google.protobuf.Any"),
    ],
    # MetricsResponse holds containerd.types.Metric (types/metrics.proto), declared here
    "Metric": [
        ("timestamp", 1, _MESSAGE, ".google.protobuf.Timestamp"), ("id", 2, _STRING, ""),
        ("data", 3, _MESSAGE, ".google.protobuf.Any"),
    ],
    "MetricsRequest": [("filters", 1, _STRING, "", True)],
    "MetricsResponse": [("metrics", 1, _MESSAGE, ".containerd.services.tasks.v1.Metric", True)],
    "DeleteResponse": [
        ("id", 1, _STRING, ""), ("pid", 2, _UINT32, ""), ("exit_status", 3, _UINT32, ""),
        ("exited_at", 4, _MESSAGE, ".google.protobuf.Timestamp"),
    ],
}
# rpc -> (request, response)
_RPCS = {
    "Exec": ("ExecProcessRequest", "google.protobuf.Empty"),
    "Start": ("StartRequest", "StartResponse"),
    "Wait": ("WaitRequest", "WaitResponse"),
    "DeleteProcess": ("DeleteProcessRequest", "DeleteResponse"),
    "Metrics": ("MetricsRequest", "MetricsResponse"),
}
INTROSPECTION = "containerd.services.introspection.v1.Introspection"



def _build() -> dict[str, Any]:
    # The default pool, which already holds Any and Timestamp, so that a message built here
    # takes the well-known types' own classes.
    pool = descriptor_pool.Default()
    assert timestamp_pb2.DESCRIPTOR.name in {"google/protobuf/timestamp.proto"}
    file = descriptor_pb2.FileDescriptorProto(
        name="pyrunc_tests/tasks_v1.proto", package="containerd.services.tasks.v1",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/timestamp.proto"],
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, type_, type_name, *repeated in fields:
            entry = message.field.add(
                name=field, number=number, type=type_,
                label=_FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL)
            if type_name:
                entry.type_name = type_name
    pool.Add(file)
    classes = {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"containerd.services.tasks.v1.{name}")) for name in _MESSAGES}
    classes["google.protobuf.Empty"] = empty_pb2.Empty
    return classes


_CLASSES = _build()


class Tasks:
    """A client of containerd's Tasks service on `address`, in `namespace`."""

    def __init__(self, address: str, namespace: str) -> None:
        self._channel = grpc.insecure_channel(f"unix://{address}")
        self._metadata = (("containerd-namespace", namespace),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Tasks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, rpc: str, timeout: float = 60, **fields: Any) -> Any:
        request_name, response_name = _RPCS[rpc]
        method = self._channel.unary_unary(
            f"/{SERVICE}/{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=_CLASSES[response_name].FromString,
        )
        return method(_CLASSES[request_name](**fields), timeout=timeout,
                      metadata=self._metadata)

    def runtime_info(self, runtime: str, options: any_pb2.Any) -> bytes:
        """What a Go client's RuntimeInfo gets (containerd 2.x): the task plugin's PluginInfo
        with a RuntimeRequest, which containerd answers by running `<shim> -info`. Returns the
        marshalled containerd.types.RuntimeInfo."""
        request = _CLASSES["RuntimeRequest"](runtime_path=runtime, options=options)
        method = self._channel.unary_unary(
            f"/{INTROSPECTION}/PluginInfo",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=_CLASSES["PluginInfoResponse"].FromString,
        )
        response = method(_CLASSES["PluginInfoRequest"](
            type="io.containerd.runtime.v2", id="task",
            options=any_pb2.Any(type_url="containerd.types.RuntimeRequest",
                                value=request.SerializeToString())),
            timeout=60, metadata=self._metadata)
        assert response.extra.type_url.endswith("containerd.types.RuntimeInfo"), response
        return bytes(response.extra.value)

    def metrics(self, container_id: str) -> any_pb2.Any:
        """The task's metrics as containerd hands them on from the shim's Stats: an Any holding
        v1.Metrics or v2.Metrics, whichever the shim sent."""
        response = self.call("Metrics", filters=[f"id=={container_id}"])
        [metric] = [m for m in response.metrics if m.id == container_id]
        return metric.data

    def exec(self, container_id: str, exec_id: str, process: dict[str, Any], *,
             stdout: str = "", stdin: str = "", stderr: str = "", terminal: bool = False) -> None:
        """Exec with `process` (an OCI Process) as the spec, and `terminal` only in the request."""
        spec = any_pb2.Any(type_url=PROCESS_SPEC_TYPE, value=json.dumps(process).encode())
        self.call("Exec", container_id=container_id, exec_id=exec_id, stdin=stdin,
                  stdout=stdout, stderr=stderr, terminal=terminal, spec=spec)
