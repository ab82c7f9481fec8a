"""Runtime names, shim binary names and the long-running shim's process title.

containerd runs runtime `io.containerd.X.vN` as the binary `containerd-shim-X-vN`. A leaf
module: the command line, the daemon and the warm parent all name the runtime through it.
"""

from __future__ import annotations

RUNTIME_NAME = "io.containerd.pyrunc.v1"  # pyrunc's runc shim (a Shim's `runtime` default)
BINARY_PREFIX = "containerd-shim-"


def runtime_name_of(argv0: str, default: str = RUNTIME_NAME) -> str:
    """The runtime a binary named like `containerd-shim-X-vN` serves: `io.containerd.X.vN`, the
    reverse of containerd's mapping; `default` for any other name (`python -m`)."""
    base = argv0.rpartition("/")[2]
    if not base.startswith(BINARY_PREFIX):
        return default
    name, _, version = base[len(BINARY_PREFIX):].rpartition("-")
    if not name or len(version) < 2 or version[0] != "v" or not version[1:].isdigit() \
            or not version[1:].isascii() or "." in name:
        return default
    return f"io.containerd.{name}.{version}"


def binary_name_of(runtime: str) -> str:
    """containerd's binary name for a runtime: the last two parts of its name (io.containerd.X.vN
    -> containerd-shim-X-vN)."""
    parts = runtime.split(".")
    if len(parts) < 2:
        parts = RUNTIME_NAME.split(".")
    return f"{BINARY_PREFIX}{parts[-2]}-{parts[-1]}"


def shim_title(runtime: str, namespace: str, id: str, address: str, debug: bool) -> str:
    """The command line the Go shim's long-running process shows, under the name `start` was
    run as: what `ps` and tools that look for containerd-shim-* expect to see."""
    return " ".join([binary_name_of(runtime), "-namespace", namespace, "-id", id,
                     "-address", address, *(["-debug"] if debug else [])])
