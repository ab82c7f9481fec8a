"""containerd-shim-pyrunc-v1: the runc shim, built on the framework as any other shim would be.

It serves the Task service (task.py, over oci/) under the names containerd uses for it, groups
containers as the Go runc shim does (its group annotation, then the CRI sandbox id), moves a new
shim into the runtime options' shim_cgroup, cleans up after a killed shim with `runc delete
--force`, answers `-info` with runc's features (info.py), and rehearses its hot paths in the warm
parent (rehearsal.py).

`start` and `delete` import this module, so its hooks import what they need when they run.
"""

from __future__ import annotations

import sys

from pyrunc.shim.api import Shim, ShimError
from pyrunc.shim.names import RUNTIME_NAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from pyrunc.shim.api import ShimContext
    from pyrunc.shim.ttrpc.server import Method

# oci.runc.DEFAULT_RUNC_ROOT (a unit test holds the two together): `delete` loads oci/runc.py only
# when runc still has the container.
RUNC_ROOT = "/run/containerd/runc"


# The [runc] table of the host's configuration: defaults for containerd.runc.v1.Options' fields
# when containerd sends none (oci.options.RuntimeOptions, less shim_cgroup, which acts on the
# shim at start; a unit test holds the two together). Literal: `start` imports this module.
RUNC_CONFIG: dict[str, tuple[type, Any]] = {
    "binary_name": (str, ""), "root": (str, ""), "systemd_cgroup": (bool, False),
    "no_pivot_root": (bool, False), "no_new_keyring": (bool, False), "io_uid": (int, 0),
    "io_gid": (int, 0), "criu_path": (str, ""), "criu_image_path": (str, ""),
    "criu_work_path": (str, ""),
}


class RuncShim(Shim):
    runtime = RUNTIME_NAME
    module = "pyrunc.shim.runc_shim"
    summary = "containerd runtime v2 shim for runc, written in Python."
    config_table = "runc"
    config = RUNC_CONFIG

    def services(self, ctx: ShimContext) -> Mapping[str, Mapping[str, Method]]:
        from pyrunc.oci.options import RuntimeOptions
        from pyrunc.shim.task import TASK_SERVICES, TaskService

        defaults = RuntimeOptions(**ctx.settings.section(self.config_table))
        service = TaskService(ctx.namespace, ctx.publisher, ctx.monitor, ctx.shutdown,
                              default_options=defaults)
        methods = service.methods()  # one table, served under every name
        return {name: methods for name in TASK_SERVICES}

    def group(self, bundle: str, id: str) -> str:
        from pyrunc.oci import bundle as bundles

        bundles.validate_id("container", id)
        try:
            group = bundles.group_of_bundle(bundle, id)
        except (OSError, ValueError):
            group = id
        bundles.validate_id("group", group)
        return group

    def start_options(self, pid: int, options: bytes) -> None:
        """The runtime option that acts on the shim itself: shim_cgroup, which it is moved
        into. Raises ValueError for options that do not decode."""
        if not options:
            return
        from google.protobuf.message import DecodeError

        from pyrunc.protos import any_pb2
        from pyrunc.shim.placement import move_to_cgroup
        from pyrunc.shim.task import runtime_options
        from pyrunc.shim.ttrpc.status import TTRPCError

        try:
            decoded = runtime_options(any_pb2.Any.FromString(options))
        except DecodeError as e:
            raise ValueError(f"runtime options on stdin: {e}") from e
        except TTRPCError as e:  # its message, not the "ttrpc: code = …" form of str()
            raise ValueError(f"runtime options on stdin: {e.message}") from e
        if decoded.shim_cgroup:
            move_to_cgroup(pid, decoded.shim_cgroup)

    def delete(self, namespace: str, id: str, bundle: str) -> int:
        """Force-delete the runc container a killed shim left, unmount the rootfs; the init pid.

        After a normal teardown there is nothing left to do, and this must cost little: it runs
        after every container. runc is only loaded and run if it still has the container."""
        from pyrunc.oci import bundle as bundles
        from pyrunc.oci.bundle import join
        from pyrunc.shim.mount import MountError, unmount_all

        bundles.validate_id("container", id)
        saved = bundles.read_options_raw(bundle)
        root = join(saved.get("root") or RUNC_ROOT, namespace)
        if bundles.exists(join(root, id)):  # its shim was killed: the container is still there
            _remove_runc_container(id, bundle, root, saved)
        try:
            unmount_all(join(bundle, "rootfs"))
        except MountError as e:
            warn(f"failed to clean up rootfs mount of {id}: {e}")
        return bundles.read_init_pid(bundle)

    def info(self, runtime: str, options: bytes) -> bytes:
        from pyrunc.shim.info import InfoError, runtime_info

        try:
            return runtime_info(runtime, options)
        except InfoError as e:
            raise ShimError(str(e)) from None

    def prepare(self, directory: str) -> None:
        from pyrunc.shim.rehearsal import rehearse

        rehearse(directory)


def warn(message: str) -> None:
    """delete's warnings: containerd logs its stderr."""
    print(f"pyrunc: {message}", file=sys.stderr)


def _remove_runc_container(id: str, bundle: str, root: str, saved: dict[str, Any]) -> None:
    """`runc delete --force` the container runc still has under `root`; a failure is warned
    of, and delete goes on."""
    import os

    from pyrunc.oci import bundle as bundles
    from pyrunc.oci.runc import Runc
    from pyrunc.shim.spawn import run_to_completion

    runc = Runc(
        monitor=None,  # type: ignore[arg-type]  # only its command line is used here
        root=root,
        log=os.path.join(bundle, "log.json"),
        binary=bundles.read_runtime(bundle) or saved.get("binary_name") or "runc",
        systemd_cgroup=bool(saved.get("systemd_cgroup")),
    )
    if not os.path.isdir(bundle):
        runc.log = os.devnull  # a half-made or removed bundle: runc may still know the id
    try:
        status, output = run_to_completion(runc.argv("delete", "--force", id))
    except OSError as e:  # runc cannot be started: say so in os/exec's words, go on
        from pyrunc.shim.errors import describe

        warn(f"failed to remove runc container {id}: {describe(e)}")
    else:
        if status != 0:
            warn(f"failed to remove runc container {id}: "
                 f"{runc.last_error() or output or f'exit status {status}'}")


SHIM = RuncShim()


def main() -> None:
    from pyrunc.shim.cli import main as run

    run(SHIM)


if __name__ == "__main__":
    main()
