"""`-info`: what this runtime is and what its runc supports, asked by containerd 1.7 and 2.x.

containerd runs `containerd-shim-… -info` with the runtime's options on stdin (a binary
google.protobuf.Any, or nothing) and reads a binary containerd.types.RuntimeInfo from stdout:
the runtime's name and version, the options as the shim understood them, and under `features`
what `<runc> features` printed (the OCI runtime-spec's Features), which 2.x's CRI plugin reads to
learn, for instance, whether runc can make ID-mapped mounts. On failure the shim writes
`<runtime name>: <error>` to stderr and exits 1, and containerd reports that text.

Everything here answers as the Go shim (containerd-shim-runc-v2 of containerd 2.1) does, so
that a client cannot tell the two apart:

- The options it takes are containerd.runc.v1.Options, echoed back re-encoded under the type URL
  `containerd.runc.v1.Options`. pyrunc also takes the options its `start` and Create take besides
  (CRI's runtimeoptions.v1.Options, which CRI sends to every runtime not named runc, and the
  legacy containerd.linux.runc ones), echoed the same way; the Go shim refuses those.
- The runc binary is the options' BinaryName, else `runc`, looked up in PATH as Go's
  exec.LookPath does it, with its error texts.
- The Go shim does not pass runc's JSON on: it unmarshals it into the runtime-spec's Go struct
  and marshals that again. go_features_json() does what Go's encoding/json does to the same
  bytes (fields in the struct's order, empty ones left out, unknown ones dropped, names matched
  regardless of case, duplicates merged, map keys sorted, `<>&` and U+2028/9 escaped, invalid
  UTF-8 replaced), and like the Go shim leaves `features` out when runc has no `features`
  command or prints something that struct cannot hold.

The runc shim's info hook (runc_shim.py) calls runtime_info(); the framework's command line reads
stdin and writes the result or the error. It is not on the path of start or delete, and loads
protobuf only when there are options to decode: the RuntimeInfo is encoded by hand.
"""

from __future__ import annotations

import json
import os
import sys

from pyrunc.shim import __version__
from pyrunc.shim.errors import quote, strerror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Schema = dict[str, Any]  # JSON name -> STRING | STRINGS | BOOL | MAP | a nested Schema

# The type URL containerd registers for the runtime-spec's features.Features
# (typeurl.Register(&features.Features{}, "types.containerd.io", "opencontainers/runtime-spec",
# major, "features", "Features")): a Go client unmarshals the Any into that struct.
FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
RUNC_OPTIONS = "containerd.runc.v1.Options"
DEFAULT_RUNC = "runc"  # go-runc's DefaultCommand

# The runtime-spec's Features (specs-go/features, v1.2.1, as containerd 2.1 vendors it): JSON
# name -> kind, in the struct's order. Every field is `omitempty`; a nested struct is a pointer,
# a bool is a *bool (nil: unknown). Fields added to the spec since (intelRdt.schemata,
# netDevices) are dropped, as by the Go shim this answers like.
STRING, STRINGS, BOOL, MAP = "string", "[]string", "*bool", "map[string]string"
_ENABLED: Schema = {"enabled": BOOL}
FEATURES: Schema = {
    "ociVersionMin": STRING,
    "ociVersionMax": STRING,
    "hooks": STRINGS,
    "mountOptions": STRINGS,
    "linux": {
        "namespaces": STRINGS,
        "capabilities": STRINGS,
        "cgroup": {"v1": BOOL, "v2": BOOL, "systemd": BOOL, "systemdUser": BOOL, "rdma": BOOL},
        "seccomp": {"enabled": BOOL, "actions": STRINGS, "operators": STRINGS, "archs": STRINGS,
                    "knownFlags": STRINGS, "supportedFlags": STRINGS},
        "apparmor": _ENABLED,
        "selinux": _ENABLED,
        "intelRdt": _ENABLED,
        "mountExtensions": {"idmap": _ENABLED},
    },
    "annotations": MAP,
    "potentiallyUnsafeConfigAnnotations": STRINGS,
}


class InfoError(Exception):
    """Why -info fails, in the Go shim's words."""


def runtime_info(runtime: str, options_data: bytes) -> bytes:
    """The encoded RuntimeInfo for the options on stdin; InfoError as the Go shim fails."""
    options, binary = read_options(options_data)
    binary = binary or DEFAULT_RUNC
    try:
        path = look_path(binary)
    except LookupError as e:
        raise InfoError(f"failed to look up the path of {quote(binary)}: {e}") from None
    features = go_features_json(runc_features(path))
    return encode_runtime_info(
        runtime, __version__, "", options,
        None if features is None else encode_any(FEATURES_TYPE_URL, features))


# --- options ---------------------------------------------------------------------------------


def read_options(data: bytes) -> tuple[bytes | None, str]:
    """(the options to echo, an encoded Any, or None without options; the runc binary they
    name, "" for the default)."""
    if not data:
        return None, ""  # Go: ErrNotFound, which Info ignores
    from google.protobuf.message import DecodeError

    from pyrunc.protos import any_pb2, runc_options_pb2

    prefix = "failed to read runtime options (*options.Options): "
    try:
        wrapped = any_pb2.Any.FromString(data)
    except DecodeError:
        raise InfoError(prefix + "proto: cannot parse invalid wire-format data") from None
    # Go's typeurl resolves a proto message by the part of the URL after its last '/'.
    name = wrapped.type_url.rpartition("/")[2]
    if name == RUNC_OPTIONS:
        try:
            options = runc_options_pb2.Options.FromString(wrapped.value)
        except DecodeError:
            raise InfoError(prefix + "proto: cannot parse invalid wire-format data") from None
        return encode_any(name, options.SerializeToString()), options.binary_name
    from pyrunc.protos import runctypes_pb2, runtimeoptions_pb2

    others: dict[str, Any] = {
        "runtimeoptions.v1.Options": runtimeoptions_pb2.Options,
        "containerd.linux.runc.RuncOptions": runctypes_pb2.RuncOptions,
        "containerd.linux.runc.CreateOptions": runctypes_pb2.CreateOptions,
    }
    if name not in others:
        raise InfoError(prefix + f"type with url {wrapped.type_url}: not found")
    # These go through what Create does with them (a runtime config file read as TOML, ...),
    # so that -info names the runc Create would run.
    from pyrunc.shim.task import runtime_options
    from pyrunc.shim.ttrpc.status import TTRPCError

    try:
        message = others[name].FromString(wrapped.value)
        binary = runtime_options(wrapped).binary_name
    except DecodeError:
        raise InfoError(f"failed to read runtime options ({name}): proto: cannot parse invalid "
                        "wire-format data") from None
    except TTRPCError as e:
        raise InfoError(f"failed to read runtime options ({name}): {e.message}") from None
    return encode_any(name, message.SerializeToString()), binary


# --- finding runc, as Go's exec.LookPath ---------------------------------------------------


def look_path(file: str) -> str:
    """The path Go's exec.LookPath finds for `file`; LookupError with Go's text if none."""
    if "/" in file:
        problem = _not_executable(file)
        if problem:
            raise LookupError(f"exec: {quote(file)}: {problem}")
        return file
    path = os.environ.get("PATH", "")
    for directory in path.split(":") if path else []:  # Go: an empty PATH has no entries
        candidate = os.path.normpath(os.path.join(directory or ".", file))
        if not _not_executable(candidate):
            if not os.path.isabs(candidate):  # Go 1.19+ refuses what "." in PATH found
                raise LookupError(f"exec: {quote(file)}: cannot run executable found "
                                  "relative to current directory")
            return candidate
    raise LookupError(f"exec: {quote(file)}: executable file not found in $PATH")


def _not_executable(path: str) -> str:
    """Why `path` is not an executable file ("" if it is), as Go's findExecutable says it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"stat {path}: {strerror(e.errno)}"
    if mode & 0o170000 == 0o040000:
        return "is a directory"
    if not os.access(path, os.X_OK, effective_ids=True):
        return "permission denied"
    return ""


# --- runc features --------------------------------------------------------------------------


def runc_features(path: str) -> bytes | None:
    """What `<path> features` prints, or None if it fails (a runc before 1.1, or another OCI
    runtime without the command: the Go shim then leaves features out, and so do we)."""
    from pyrunc.shim.spawn import spawn

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn([path, "features"], stdout=w)  # stdin and stderr: /dev/null
    except OSError:
        os.close(r)
        return None
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return output if os.waitstatus_to_exitcode(status) == 0 else None


class _Object(tuple):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs, in order and with duplicates: Go merges those.
    (A tuple: JSON arrays are lists.)"""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; Go does not


def go_features_json(raw: bytes | None) -> bytes | None:
    """runc's features JSON as the Go shim passes it on: unmarshalled into the runtime-spec's
    Features and marshalled again by Go's encoding/json. None where Go's json.Unmarshal fails
    (syntax, or a value of the wrong type anywhere in the struct)."""
    if raw is None:
        return None
    # Each byte of invalid UTF-8 becomes one U+FFFD in Go; as a lone surrogate here, one per
    # byte, it is replaced with those below (and is a syntax error outside strings, as in Go).
    text = raw.decode("utf-8", "surrogateescape")
    if _nesting(text) > GO_MAX_NESTING:
        return None
    limit = sys.getrecursionlimit()  # Python's parser recurses once per level, Go's does not
    sys.setrecursionlimit(max(limit, GO_MAX_NESTING + 200))
    try:
        value = json.loads(text, object_pairs_hook=_Object, parse_constant=_no_constants)
        return _marshal(_decode_struct(value, FEATURES, {}, top=True), FEATURES).encode()
    except (ValueError, TypeError, RecursionError):
        return None
    finally:
        sys.setrecursionlimit(limit)


GO_MAX_NESTING = 10000  # encoding/json's scanner refuses deeper arrays and objects


def _nesting(text: str) -> int:
    """How deep arrays and objects nest in `text`, strings left out (a bound for JSON that does
    not parse: it fails anyway)."""
    import re

    depth = deepest = 0
    for c in re.sub(r'"(?:[^"\\]|\\.)*"', "", text):
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _fold(name: str) -> str:
    """Go's foldName: ASCII upper-cased, and the two non-ASCII runes that fold into ASCII."""
    return name.upper() if name.isascii() else "".join(
        "S" if c == "\u017f" else "K" if c == "\u212a" else c.upper() if c.isascii() else c
        for c in name)


def _field_of(key: str, schema: Schema) -> str | None:
    if key in schema:
        return key
    folded = _fold(key)
    return next((name for name in schema if name.upper() == folded), None)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return _valid(value)


def _valid(text: str) -> str:
    """Lone surrogates (escaped ones, and the invalid bytes above) as Go decodes them: U+FFFD."""
    if text.isascii():
        return text
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _decode_struct(value: object, schema: Schema, into: dict[str, Any], top: bool = False
                   ) -> dict[str, Any]:
    """Go's json.Unmarshal into a struct (`into`, which keeps what earlier duplicates set)."""
    if value is None and top:
        return into  # null into a struct value: nothing happens
    if not isinstance(value, _Object):
        raise TypeError("not an object")
    for raw_key, item in value:
        name = _field_of(_valid(raw_key), schema)
        if name is None:
            continue  # unknown fields are dropped
        kind = schema[name]
        if item is None:  # null: pointers, slices and maps become nil; a string stays as it was
            if kind != STRING:
                into.pop(name, None)
        elif kind == STRING:
            into[name] = _string(item)
        elif kind == BOOL:
            if not isinstance(item, bool):
                raise TypeError("not a bool")
            into[name] = item
        elif kind == STRINGS:
            if not isinstance(item, list):
                raise TypeError("not an array")
            into[name] = ["" if s is None else _string(s) for s in item]
        elif kind == MAP:
            if not isinstance(item, _Object):
                raise TypeError("not an object")
            mapping = into.setdefault(name, {})
            for k, v in item:
                mapping[_valid(k)] = "" if v is None else _string(v)
        else:
            into[name] = _decode_struct(item, kind, into.get(name, {}))
    return into


def _marshal(value: dict[str, Any], schema: Schema) -> str:
    """Go's json.Marshal of a decoded struct: compact, every field omitempty."""
    parts = []
    for name, kind in schema.items():
        if name not in value:
            continue
        item = value[name]
        if kind == STRING:
            if item:
                parts.append(f"{_go_string(name)}:{_go_string(item)}")
        elif kind == BOOL:
            parts.append(f"{_go_string(name)}:{'true' if item else 'false'}")
        elif kind == STRINGS:
            if item:
                parts.append(f"{_go_string(name)}:[{','.join(map(_go_string, item))}]")
        elif kind == MAP:
            if item:  # Go sorts map keys (bytewise in UTF-8: the same as by code point)
                pairs = (f"{_go_string(k)}:{_go_string(item[k])}" for k in sorted(item))
                parts.append(f"{_go_string(name)}:{{{','.join(pairs)}}}")
        else:
            parts.append(f"{_go_string(name)}:{_marshal(item, kind)}")
    return "{" + ",".join(parts) + "}"


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}


def _go_string(text: str) -> str:
    """A JSON string as Go's encoder writes it: Python's escapes for `"`, `\\` and the control
    characters are the same (\\b \\f \\n \\r \\t, else \\u00xx); Go also escapes <, >, & and the
    two line separators, and writes the rest as UTF-8."""
    encoded = json.dumps(text, ensure_ascii=False)
    if any(c in encoded for c in _HTML_ESCAPES):
        encoded = "".join(_HTML_ESCAPES.get(c, c) for c in encoded)
    return encoded


# --- encoding --------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_any(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any{type_url=1, value=2}, proto3 (empty fields left out)."""
    out = _bytes_field(1, type_url.encode()) if type_url else b""
    return out + (_bytes_field(2, value) if value else b"")


def encode_runtime_info(name: str, version: str, revision: str, options: bytes | None,
                        features: bytes | None) -> bytes:
    """containerd.types.RuntimeInfo{name=1, version=2 RuntimeVersion{version=1, revision=2},
    options=3, features=4} as Go marshals it: fields in number order, the version message always
    there, options and features (encoded Anys) only when set."""
    out = _bytes_field(1, name.encode()) if name else b""
    runtime_version = (_bytes_field(1, version.encode()) if version else b"") + \
        (_bytes_field(2, revision.encode()) if revision else b"")
    out += _bytes_field(2, runtime_version)
    if options is not None:
        out += _bytes_field(3, options)
    if features is not None:
        out += _bytes_field(4, features)
    return out
