"""Build the generated modules' message classes straight from upb, without protobuf's Python layer.

A module made by protoc imports descriptor_pool, symbol_database, builder and, through them,
python_message, text_format, containers, the encoder and decoder, pickle and more, although
with upb (protobuf's C extension, `google._upb._message`) none of that runs once the classes
exist: about 1.6 MiB of a running shim's PSS (issue 10). Each generated module here
(protos/generate.py writes them) asks `ACTIVE` first. If upb is the implementation protobuf
itself uses, `build` adds the module's serialized FileDescriptorProto to upb's default pool and
makes the classes with upb's MessageMeta: what protobuf's builder does with upb, minus the
symbol database. Otherwise (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python or cpp, a protobuf
without upb) protoc's code runs, as protoc wrote it.

The classes are protobuf's own: upb keeps one class per message type and MessageMeta returns it
when asked again, so google.protobuf.any_pb2.Any and this package's any_pb2.Any are one class,
in one pool, whichever module is imported first. upb imports
google.protobuf.internal.well_known_types with its first class, for the mixins of the
well-known types (Any.Pack, Timestamp.ToDatetime, ...), which therefore work as usual.

What is private: `google._upb._message` (default_pool, MessageMeta) is protobuf's internal
module, not its API. tests/unit/test_protos_lean.py runs both paths (and protobuf's pure-Python
implementation), each in a subprocess, and compares every message's encoding byte for byte.

Not done here: the classes are not registered in protobuf's symbol database, which only
`symbol_database.Default().GetSymbol` reads (and so unpickling a nested message type).
"""

from __future__ import annotations

from typing import Any

# Imported anyway by upb's first class (via well_known_types and descriptor), so free here.
from google.protobuf.internal import api_implementation

ACTIVE = api_implementation.Type() == "upb"

if ACTIVE:
    from google._upb import _message as _upb
    from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
    from google.protobuf.message import Message


def build(module: dict[str, Any], serialized: bytes, module_name: str) -> None:
    """Fill a module's namespace as protobuf's builder does (BuildMessageAndEnumDescriptors,
    then BuildTopDescriptorsAndMessages), from the serialized FileDescriptorProto of its
    file; the files it imports must be in the pool already."""
    file = _upb.default_pool.AddSerializedFile(serialized)
    module["DESCRIPTOR"] = file
    for name, message in file.message_types_by_name.items():
        _add_descriptors(module, message, "_" + name.upper())
    for name, enum in file.enum_types_by_name.items():
        module["_" + name.upper()] = enum
        module[name] = EnumTypeWrapper(enum)
        for value in enum.values:
            module[value.name] = value.number
    for name, extension in file.extensions_by_name.items():
        module[name.upper() + "_FIELD_NUMBER"] = extension.number
        module[name] = extension
    for name, service in file.services_by_name.items():
        module["_" + name.upper()] = service
    for name, message in file.message_types_by_name.items():
        module[name] = _message_class(module_name, message, "")


def _add_descriptors(module: dict[str, Any], message: Any, key: str) -> None:
    module[key] = message
    for name, nested in message.nested_types_by_name.items():
        _add_descriptors(module, nested, key + "_" + name.upper())
    for enum in message.enum_types:
        module[key + "_" + enum.name.upper()] = enum


def _message_class(module_name: str, message: Any, prefix: str) -> Any:
    namespace = {
        name: _message_class(module_name, nested, prefix + message.name + ".")
        for name, nested in message.nested_types_by_name.items()
    }
    namespace.update(DESCRIPTOR=message, __module__=module_name, __qualname__=prefix + message.name)
    return _upb.MessageMeta(message.name, (Message,), namespace)


def build_well_known(module: dict[str, Any], name: str) -> bool:
    """Fill a module's namespace like google.protobuf.<name> (any_pb2, timestamp_pb2, ...),
    without importing that module; False (nothing done) if upb is not active or that
    module's code is not as expected.

    The serialized file is a constant of the code that importing protobuf's module would run,
    taken without running it: a different serialization under the same file name would make
    the pool refuse whichever came second, so only protobuf's own bytes will do."""
    if not ACTIVE:
        return False
    from importlib.machinery import PathFinder

    import google.protobuf

    spec = PathFinder.find_spec(f"google.protobuf.{name}", google.protobuf.__path__)
    try:
        code = spec.loader.get_code(spec.name)  # type: ignore[union-attr]
    except (AttributeError, ImportError, OSError, SyntaxError):
        return False
    # A FileDescriptorProto starts with its field 1, the file's name: b"\n", length, name
    # (these names are short: the length is one byte).
    file_name = f"google/protobuf/{name.removesuffix('_pb2')}.proto".encode()
    head = b"\n" + bytes([len(file_name)]) + file_name
    consts = getattr(code, "co_consts", ())
    found = [c for c in consts if isinstance(c, bytes) and c.startswith(head)]
    if len(found) != 1:
        return False
    build(module, found[0], f"google.protobuf.{name}")
    return True
