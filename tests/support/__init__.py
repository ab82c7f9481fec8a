"""Test support for pyrunc: a private containerd, a busybox image and a census of leftovers.

Standard library only, so that `python -m tests.support.demo` runs without pytest.
"""

from tests.support.containerd import (
    DEFAULT_NAMESPACE,
    PYRUNC_SHIM,
    RUNC_SHIM,
    Containerd,
    CtrError,
    MountEntry,
    Task,
    read_mounts,
)
from tests.support.image import build_busybox_image, image_digest, make_rootfs_dir
from tests.support.names import (
    ALL_SHIMS,
    IMAGE,
    PYRUNC_RUNTIME,
    RUNC_RUNTIME,
    RUNTIMES,
    SHIM_BINARIES,
    shim_binary,
    unique_id,
)

__all__ = [
    "ALL_SHIMS",
    "DEFAULT_NAMESPACE",
    "IMAGE",
    "PYRUNC_RUNTIME",
    "PYRUNC_SHIM",
    "RUNC_RUNTIME",
    "RUNC_SHIM",
    "RUNTIMES",
    "SHIM_BINARIES",
    "Containerd",
    "CtrError",
    "MountEntry",
    "Task",
    "build_busybox_image",
    "image_digest",
    "make_rootfs_dir",
    "read_mounts",
    "shim_binary",
    "unique_id",
]
