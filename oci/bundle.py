"""An OCI bundle as containerd lays it out, and the files the shim keeps in it.

`<bundle>/config.json` is the runtime spec; the shim adds `options.json` (its runtime options, so
that the `delete` command can find runc's root later), `runtime` (the runc binary name) and
`init.pid` (written by runc).

`start` and `delete` load this module, and their own code does not load `os` (with the
`collections.abc` it imports, about 1 ms, a third of what each may take over the bare
interpreter): the path functions below are posixpath's, without it, and what else they need of
the system comes from `posix`, the C module behind `os`, loaded with the interpreter.
"""

from __future__ import annotations

import posix

TYPE_CHECKING = False  # typing is not imported at run time: `start` and `delete` load this
if TYPE_CHECKING:
    from typing import Any

    from pyrunc.oci.options import RuntimeOptions

INIT_PID_FILE = "init.pid"
OPTIONS_FILE = "options.json"
RUNTIME_FILE = "runtime"
# containerd's identifier rules: alphanumerics separated by single '.', '_' or '-', at most 76.
MAX_ID_LENGTH = 76
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SEPARATORS = frozenset("._-")
# Annotations that put containers into one shim, in order of precedence (as the Go shim).
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")


class InvalidID(ValueError):
    pass


def validate_id(kind: str, value: str) -> None:
    """Refuse an id before any path is built from it."""
    if not value:
        raise InvalidID(f"{kind} id must not be empty")
    if len(value) > MAX_ID_LENGTH or not _is_identifier(value):
        from pyrunc.oci.errors import quote  # only now: `start` and `delete` import this module

        if len(value) > MAX_ID_LENGTH:
            raise InvalidID(
                f"{kind} id {quote(value[:MAX_ID_LENGTH])}… is longer than {MAX_ID_LENGTH}")
        raise InvalidID(
            f"{kind} id {quote(value)} must be alphanumerics separated by single '.', '_' or '-'"
        )


def _is_identifier(value: str) -> bool:
    """Alphanumeric runs joined by single separators (no regex: `start` imports this)."""
    previous_separator = True  # no separator may come first
    for char in value:
        if char in _SEPARATORS:
            if previous_separator:
                return False
            previous_separator = True
        elif char in _ALNUM:
            previous_separator = False
        else:
            return False
    return not previous_separator


# ---- paths, without os ----------------------------------------------------------------------


def join(path: str, *parts: str) -> str:
    """os.path.join for str (the same steps as posixpath.join)."""
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def normpath(path: str) -> str:
    """os.path.normpath: `path` itself when it is already normal (every part non-empty and
    neither '.' nor '..', as the paths containerd hands over are); anything else goes through
    posixpath, which then loads os."""
    parts = path.split("/")
    if parts[0] == "":  # absolute: one leading '/'
        parts = parts[1:]
    if parts and all(part and part != "." and part != ".." for part in parts):
        return path
    import posixpath

    return posixpath.normpath(path)


def exists(path: str) -> bool:
    """os.path.exists."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    """os.path.isdir."""
    try:
        mode = posix.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return mode & 0o170000 == 0o040000  # S_ISDIR


def dirname(path: str) -> str:
    """os.path.dirname for str (the same steps as posixpath.dirname)."""
    head = path[: path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


# ---- the files in a bundle -------------------------------------------------------------------


def write_options(bundle: str, options: RuntimeOptions) -> None:
    import json

    _write_atomic(join(bundle, OPTIONS_FILE), json.dumps(options.as_dict()))


def read_options_raw(bundle: str) -> dict[str, Any]:
    """options.json as saved at Create; {} when missing, unreadable, or holding only defaults
    (the common case: then the file is not even parsed)."""
    try:
        with open(join(bundle, OPTIONS_FILE), "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if b'"root": ""' in data and b'"binary_name": ""' in data and (
            b'"systemd_cgroup": false' in data):
        return {}
    import json

    try:
        raw = json.loads(data)
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def read_options(bundle: str) -> RuntimeOptions:
    """The options saved at Create; defaults when the file is missing or unreadable."""
    from pyrunc.oci.options import RuntimeOptions

    known = set(RuntimeOptions._fields)
    return RuntimeOptions(**{k: v for k, v in read_options_raw(bundle).items() if k in known})


def write_runtime(bundle: str, binary: str) -> None:
    _write_atomic(join(bundle, RUNTIME_FILE), binary)


def read_runtime(bundle: str) -> str:
    try:
        with open(join(bundle, RUNTIME_FILE)) as f:
            return f.read().strip()
    except OSError:  # (no contextlib: start and delete import this module)
        return ""


def read_init_pid(bundle: str) -> int:
    """The pid runc wrote to init.pid (atomically); 0 when there is none (yet). As
    oci.runc.read_pid_file, which `delete` does not load."""
    try:
        with open(join(bundle, INIT_PID_FILE)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def load_spec(bundle: str) -> dict[str, Any]:
    import json

    from pyrunc.oci.errors import PathError

    path = join(bundle, "config.json")
    try:
        with open(path) as f:
            spec: dict[str, Any] = json.load(f)
    except OSError as e:
        raise PathError("open", path, e.errno) from e
    return spec


def has_own_pid_namespace(spec: dict[str, Any]) -> bool:
    """A pid namespace of its own: when init dies, the kernel kills the rest. Without one the
    shim must kill every process of the container itself."""
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "pid" and not ns.get("path"):
            return True
    return False


def group_of_bundle(bundle: str, container_id: str) -> str:
    """group_id of the bundle's spec, without parsing it when no grouping annotation appears
    in it at all (the common case, on the path of every container start)."""
    with open(join(bundle, "config.json"), "rb") as f:
        raw = f.read()
    if not any(key.encode() in raw for key in GROUP_ANNOTATIONS):
        return container_id
    import json

    return group_id(json.loads(raw), container_id)


def group_id(spec: dict[str, Any], container_id: str) -> str:
    annotations = spec.get("annotations") or {}
    for key in GROUP_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key])
    return container_id


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    posix.replace(tmp, path)
