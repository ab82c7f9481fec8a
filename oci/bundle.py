"""An OCI bundle as containerd lays it out, and the files the shim keeps in it.

`<bundle>/config.json` is the runtime spec; the shim adds `options.json` (its runtime options, so
that the `delete` command can find runc's root later), `runtime` (the runc binary name) and
`init.pid` (written by runc).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

INIT_PID_FILE = "init.pid"
OPTIONS_FILE = "options.json"
RUNTIME_FILE = "runtime"
# containerd's identifier rules: alphanumerics separated by single '.', '_' or '-', at most 76.
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
MAX_ID_LENGTH = 76
# Annotations that put containers into one shim, in order of precedence (as the Go shim).
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")


class InvalidID(ValueError):
    pass


def validate_id(kind: str, value: str) -> None:
    """Refuse an id before any path is built from it."""
    if not value:
        raise InvalidID(f"{kind} id must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidID(f"{kind} id {value[:MAX_ID_LENGTH]!r}… is longer than {MAX_ID_LENGTH}")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidID(
            f"{kind} id {value!r} must be alphanumerics separated by single '.', '_' or '-'"
        )


@dataclass(frozen=True)
class RuntimeOptions:
    """The runc options of containerd.runc.v1.Options that the OCI side acts on."""

    no_pivot_root: bool = False
    no_new_keyring: bool = False
    shim_cgroup: str = ""
    io_uid: int = 0
    io_gid: int = 0
    binary_name: str = ""
    root: str = ""
    criu_path: str = ""
    systemd_cgroup: bool = False
    criu_image_path: str = ""
    criu_work_path: str = ""


def write_options(bundle: str, options: RuntimeOptions) -> None:
    _write_atomic(os.path.join(bundle, OPTIONS_FILE), json.dumps(asdict(options)))


def read_options(bundle: str) -> RuntimeOptions:
    """The options saved at Create; defaults when the file is missing or unreadable."""
    try:
        with open(os.path.join(bundle, OPTIONS_FILE)) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return RuntimeOptions()
    known = {f.name for f in fields(RuntimeOptions)}
    return RuntimeOptions(**{k: v for k, v in raw.items() if k in known})


def write_runtime(bundle: str, binary: str) -> None:
    _write_atomic(os.path.join(bundle, RUNTIME_FILE), binary)


def read_runtime(bundle: str) -> str:
    with contextlib.suppress(OSError), open(os.path.join(bundle, RUNTIME_FILE)) as f:
        return f.read().strip()
    return ""


def load_spec(bundle: str) -> dict[str, Any]:
    with open(os.path.join(bundle, "config.json")) as f:
        spec: dict[str, Any] = json.load(f)
    return spec


def has_own_pid_namespace(spec: dict[str, Any]) -> bool:
    """A pid namespace of its own: when init dies, the kernel kills the rest. Without one the
    shim must kill every process of the container itself."""
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "pid" and not ns.get("path"):
            return True
    return False


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
    os.replace(tmp, path)
