"""Names the tests share: the test image, the runtimes, their shim binaries, container ids."""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

from tests.support.containerd import PYRUNC_SHIM, RUNC_SHIM

IMAGE = "localhost/pyrunc/busybox:latest"
RUNC_RUNTIME = "io.containerd.runc.v2"

# The drop-in lane (PYRUNC_TEST_DROP_IN=1): pyrunc is installed as containerd-shim-runc-v2 first
# on the private containerd's PATH and serves the runtime name io.containerd.runc.v2, as an
# operator's symlink would make it; the Go shim is then not run at all. PYRUNC_RUNTIME is the
# name pyrunc is served under in this run, so tests that name it run through the drop-in.
DROP_IN = os.environ.get("PYRUNC_TEST_DROP_IN", "") not in ("", "0")
# pyrunc's own name, under which it is installed in every lane.
PYRUNC_OWN_RUNTIME = "io.containerd.pyrunc.v1"
PYRUNC_RUNTIME = RUNC_RUNTIME if DROP_IN else PYRUNC_OWN_RUNTIME
# Runtimes a test parametrized with both_runtimes runs under: pyrunc and the Go shim, or in the
# drop-in lane pyrunc alone (one name cannot be served by both).
RUNTIMES = (PYRUNC_RUNTIME,) if DROP_IN else (PYRUNC_RUNTIME, RUNC_RUNTIME)
SHIM_BINARIES = {PYRUNC_OWN_RUNTIME: PYRUNC_SHIM, RUNC_RUNTIME: RUNC_SHIM}
ALL_SHIMS = tuple(SHIM_BINARIES.values())

# The containerd the integration tests' private daemon runs (PYRUNC_TEST_CONTAINERD): bookworm's
# own 1.6 on PATH, or 1.7 (Debian 13) and 2.x (sid) as `make test` fetches them into .cache/.
CONTAINERD_SUITES = {"1.7": "trixie", "2.x": "sid"}
CONTAINERD_VERSION = os.environ.get("PYRUNC_TEST_CONTAINERD", "") or "1.6"
REPO = Path(__file__).resolve().parents[2]


def containerd_binaries(version: str) -> tuple[str, str]:
    """(containerd, ctr) of containerd `version`: "1.6" (installed), "1.7" or "2.x" (.cache/)."""
    if version == "1.6":
        return "containerd", "ctr"
    if version not in CONTAINERD_SUITES:
        raise ValueError(f"unknown containerd version {version!r}: expected 1.6, "
                         f"{', '.join(CONTAINERD_SUITES)}")
    suite = CONTAINERD_SUITES[version]
    binaries = REPO / ".cache" / f"containerd-{suite}" / "usr" / "bin"
    if not (binaries / "containerd").exists():
        raise FileNotFoundError(
            f"containerd {version} is not fetched: run `make test` (it runs "
            f"tests/support/fetch_containerd.sh {suite} {binaries.parents[1]})")
    return str(binaries / "containerd"), str(binaries / "ctr")

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
