"""protos/_lean.py: classes built straight from upb are protoc's classes, byte for byte.

Each path runs in a subprocess of its own, since upb keeps one class per message type in a
process: "lean" (the default with upb), "protoc" (upb, protoc's code: _lean.ACTIVE forced off
before the modules load) and "python" (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, where
the modules fall back by themselves). Every message of every module here, nested and map-entry
types too, is filled field by field, encoded on each path and decoded on the others.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyrunc.protos
from pyrunc.protos import _lean

REPO_PROTOS = Path(__file__).resolve().parents[2] / "protos"
MODULES = sorted(p.stem for p in REPO_PROTOS.glob("*_pb2.py"))
WELL_KNOWN = ["any_pb2", "empty_pb2", "timestamp_pb2"]
# What protoc's modules import and the lean ones must not (the bulk of the memory).
HEAVY = [
    "google.protobuf.descriptor_pool",
    "google.protobuf.symbol_database",
    "google.protobuf.message_factory",
    "google.protobuf.reflection",
    "google.protobuf.text_format",
    "google.protobuf.internal.builder",
    "google.protobuf.internal.python_message",
    "google.protobuf.internal.decoder",
    "google.protobuf.internal.encoder",
]

CHILD = r"""
import importlib, json, sys, types
from pyrunc.protos import _lean
if sys.argv[1] == "protoc":
    _lean.ACTIVE = False
modules = {n: importlib.import_module("pyrunc.protos." + n) for n in sys.argv[2].split(",")}
loaded = sorted(m for m in sys.modules if m.startswith("google."))

from google.protobuf.internal import api_implementation

def sample(field, n):
    t = field.cpp_type
    if t == field.CPPTYPE_INT32: return -n
    if t == field.CPPTYPE_INT64: return -(2**40) - n
    if t == field.CPPTYPE_UINT32: return 2**32 - n
    if t == field.CPPTYPE_UINT64: return 2**64 - n
    if t in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT): return n + 0.5
    if t == field.CPPTYPE_BOOL: return True
    if t == field.CPPTYPE_ENUM: return field.enum_type.values[-1].number
    if field.type == field.TYPE_BYTES: return bytes([n, 0, 255])
    return f"{field.name}-{n}-\u00e9"

def fill(msg, depth=0):
    if msg.DESCRIPTOR.full_name == "google.protobuf.Any":  # python's Any.__eq__ unpacks it
        msg.type_url = "type.googleapis.com/google.protobuf.Timestamp"
        msg.value = b"\x08\x05\x10\x07"  # seconds=5, nanos=7
        return msg
    for n, field in enumerate(msg.DESCRIPTOR.fields, 1):
        value = getattr(msg, field.name)
        sub = field.message_type
        if hasattr(value, "keys"):  # a map: one entry, since the order of more may differ
            entry = sub.fields_by_name
            key = sample(entry["key"], n)
            if entry["value"].message_type:
                fill(value[key], depth + 1)
            else:
                value[key] = sample(entry["value"], n)
        elif field.is_repeated:
            for i in range(2):
                if not sub:
                    value.append(sample(field, n + i))
                elif depth < 3:
                    fill(value.add(), depth + 1)
        elif sub:
            if depth < 3:
                value.SetInParent()
                fill(value, depth + 1)
        else:
            setattr(msg, field.name, sample(field, n))
    return msg

def classes(owner, descriptors):
    for d in descriptors:
        cls = getattr(owner, d.name)
        yield d.full_name, cls
        yield from classes(cls, d.nested_types)

given = json.load(sys.stdin)
out = {"active": _lean.ACTIVE, "impl": api_implementation.Type(), "loaded": loaded,
       "encoded": {}, "reencoded": {}, "equal": {}, "classes": {}, "names": {}}
for name, module in modules.items():
    out["names"][name] = sorted(
        k for k, v in vars(module).items()
        if not k.startswith("__") and not isinstance(v, types.ModuleType)
        and k not in ("_globals", "_sym_db"))
    for full_name, cls in classes(module, module.DESCRIPTOR.message_types_by_name.values()):
        built = fill(cls())
        out["encoded"][full_name] = built.SerializeToString().hex()
        out["classes"][full_name] = [cls.__module__, cls.__qualname__]
        if full_name in given:
            parsed = cls.FromString(bytes.fromhex(given[full_name]))
            out["reencoded"][full_name] = parsed.SerializeToString().hex()
            out["equal"][full_name] = parsed == built
print(json.dumps(out))
"""


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(pyrunc.protos.__file__).parents[2])  # the folder holding this pyrunc
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env | extra


def _run(mode: str, given: dict[str, str] | None = None) -> dict[str, Any]:
    env = _env(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python") if mode == "python" else _env()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, ",".join(MODULES)],
        input=json.dumps(given or {}),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    if not _lean.ACTIVE:
        pytest.skip("protobuf here does not use upb")
    protoc = _run("protoc")
    lean = _run("lean", protoc["encoded"])
    python = _run("python", lean["encoded"])
    protoc_again = _run("protoc", lean["encoded"])
    return {"protoc": protoc, "lean": lean, "python": python, "protoc_again": protoc_again}


def _all_message_names() -> set[str]:
    def walk(descriptors: Any) -> Iterator[str]:
        for d in descriptors:
            yield d.full_name
            yield from walk(d.nested_types)

    modules = [importlib.import_module(f"pyrunc.protos.{name}") for name in MODULES]
    return {n for m in modules for n in walk(m.DESCRIPTOR.message_types_by_name.values())}


def test_every_module_is_covered() -> None:
    assert set(WELL_KNOWN) <= set(MODULES)
    assert {"shim_pb2", "events_pb2", "metrics_v1_pb2", "metrics_v2_pb2"} <= set(MODULES)


def test_paths_are_what_they_say(runs: dict[str, dict[str, Any]]) -> None:
    assert (runs["lean"]["active"], runs["lean"]["impl"]) == (True, "upb")
    assert (runs["protoc"]["active"], runs["protoc"]["impl"]) == (False, "upb")
    assert (runs["python"]["active"], runs["python"]["impl"]) == (False, "python")


def test_lean_modules_leave_protobufs_python_layer_out(runs: dict[str, dict[str, Any]]) -> None:
    assert not set(HEAVY) & set(runs["lean"]["loaded"])
    assert set(HEAVY) <= set(runs["protoc"]["loaded"])  # what the test is worth


def test_every_message_encodes_alike(runs: dict[str, dict[str, Any]]) -> None:
    encoded = runs["lean"]["encoded"]
    assert set(encoded) == _all_message_names()  # nested and map-entry types too
    assert {"containerd.task.v2.CreateTaskRequest", "containerd.events.TaskExit",
            "io.containerd.cgroups.v1.Metrics", "io.containerd.cgroups.v2.Metrics",
            "google.protobuf.Any", "google.protobuf.Timestamp",
            "google.protobuf.Empty"} <= set(encoded)
    assert encoded == runs["protoc"]["encoded"]
    assert encoded == runs["python"]["encoded"]


def test_each_path_decodes_the_others(runs: dict[str, dict[str, Any]]) -> None:
    # lean decoded protoc's bytes; python and protoc (again) decoded lean's
    for name in ("lean", "python", "protoc_again"):
        run = runs[name]
        assert run["reencoded"] == run["encoded"], name
        assert all(run["equal"].values()), name


def test_classes_are_named_alike(runs: dict[str, dict[str, Any]]) -> None:
    assert runs["lean"]["classes"] == runs["protoc"]["classes"]
    assert runs["lean"]["classes"]["google.protobuf.Any"] == ["google.protobuf.any_pb2", "Any"]


def test_module_namespaces_alike(runs: dict[str, dict[str, Any]]) -> None:
    lean, protoc = runs["lean"]["names"], runs["protoc"]["names"]
    for name in MODULES:
        if name in WELL_KNOWN:  # the fallback imports protobuf's public names only
            assert [n for n in lean[name] if not n.startswith("_")] == protoc[name], name
        else:
            assert lean[name] == protoc[name], name


MIXED = r"""
import sys
first = sys.argv[1]
if first == "protobuf":
    from google.protobuf import any_pb2 as theirs, timestamp_pb2 as their_ts
from pyrunc.protos import any_pb2, forward_pb2, shim_pb2, timestamp_pb2
if first == "pyrunc":
    from google.protobuf import any_pb2 as theirs, timestamp_pb2 as their_ts
assert theirs.Any is any_pb2.Any and their_ts.Timestamp is timestamp_pb2.Timestamp
req = shim_pb2.CreateTaskRequest(id="c", options=theirs.Any(type_url="t", value=b"v"))
req.options.CopyFrom(any_pb2.Any(type_url="u"))
env = forward_pb2.Envelope(timestamp=their_ts.Timestamp(seconds=3))
assert type(env.timestamp) is timestamp_pb2.Timestamp
# the well-known types' mixins, from protobuf's well_known_types
packed = any_pb2.Any()
packed.Pack(shim_pb2.ConnectRequest(id="x"))
assert packed.Is(shim_pb2.ConnectRequest.DESCRIPTOR)
out = shim_pb2.ConnectRequest()
assert packed.Unpack(out) and out.id == "x"
ts = timestamp_pb2.Timestamp()
ts.FromNanoseconds(1_500_000_000)
assert (ts.seconds, ts.nanos, ts.ToJsonString()) == (1, 500_000_000, "1970-01-01T00:00:01.500Z")
print("ok")
"""


@pytest.mark.parametrize("first", ["protobuf", "pyrunc"])
def test_protobufs_modules_and_these_share_classes(first: str) -> None:
    """Whichever is imported first, google.protobuf.any_pb2.Any is pyrunc.protos.any_pb2.Any."""
    proc = subprocess.run([sys.executable, "-c", MIXED, first], capture_output=True, text=True,
                          env=_env(), timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr


def test_well_known_module_that_is_not_there_is_refused() -> None:
    namespace: dict[str, Any] = {}
    assert not _lean.build_well_known(namespace, "no_such_pb2")
    assert namespace == {}
