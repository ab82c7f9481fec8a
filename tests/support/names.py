"""Names the tests share: the test image, the runtimes, their shim binaries, container ids."""

from __future__ import annotations

import itertools
import secrets

from tests.support.containerd import PYRUNC_SHIM, RUNC_SHIM

IMAGE = "localhost/pyrunc/busybox:latest"
PYRUNC_RUNTIME = "io.containerd.pyrunc.v1"
RUNC_RUNTIME = "io.containerd.runc.v2"
RUNTIMES = (PYRUNC_RUNTIME, RUNC_RUNTIME)
SHIM_BINARIES = {PYRUNC_RUNTIME: PYRUNC_SHIM, RUNC_RUNTIME: RUNC_SHIM}
ALL_SHIMS = tuple(SHIM_BINARIES.values())

_counter = itertools.count(1)


def shim_binary(runtime: str) -> str:
    """The binary containerd runs for `runtime` (io.containerd.X.vN -> containerd-shim-X-vN)."""
    if runtime in SHIM_BINARIES:
        return SHIM_BINARIES[runtime]
    name, _, version = runtime.removeprefix("io.containerd.").rpartition(".")
    return f"containerd-shim-{name}-{version}"


def unique_id(prefix: str = "t") -> str:
    """A short container id, unique in this run and very likely across runs: `prefix-7-3fa9`."""
    return f"{prefix}-{next(_counter)}-{secrets.token_hex(2)}"
