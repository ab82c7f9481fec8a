"""What a shim built on pyrunc.shim provides, and what the framework gives it.

The framework does everything containerd asks of any runtime v2 shim: the Go-style command line,
`start` (the socket, the `address` file, the warm parent's fork or a spawned process), `delete`'s
response, `-v`, the long-running process with its reaper, ttrpc server, event publisher and
logging. What is particular to one shim it asks of a `Shim`:

- `services(ctx)`: the ttrpc services to serve, usually the Task service under its names;
- `group(bundle, id)`: which containers share one shim process (and refusing a bad id);
- `start_options(pid, options)`: what the runtime options on `start`'s stdin do to the new shim;
- `delete(namespace, id, bundle)`: clean up after a shim that is gone; the init pid to report;
- `info(runtime, options)`: the `-info` action's RuntimeInfo;
- `prepare(directory)`: the warm parent's warm-up before it forks shims.

A shim is a module with a `SHIM` instance and a `main()` that calls `pyrunc.shim.cli.main(SHIM)`;
`module` names it, so that the warm parent and a spawned shim can load it again.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from pyrunc.shim.config import Settings
    from pyrunc.shim.publisher import Publisher
    from pyrunc.shim.reaper import Reaper
    from pyrunc.shim.ttrpc.server import Method

__all__ = ["Shim", "ShimContext", "ShimError", "load_shim"]


class ShimError(Exception):
    """A failure a hook reports to containerd as it is: its text is the message."""


class ShimContext:
    """What a long-running shim's services are built with."""

    __slots__ = ("monitor", "namespace", "publisher", "runtime", "settings", "shutdown")

    def __init__(self, *, namespace: str, runtime: str, publisher: Publisher, monitor: Reaper,
                 shutdown: Callable[[], None], settings: Settings) -> None:
        self.namespace = namespace  # containerd's -namespace
        self.runtime = runtime  # the runtime name containerd ran the binary as
        self.publisher = publisher  # publish(event) sends events to containerd, in order
        self.monitor = monitor  # spawn and watch children: the process's one waitpid owner
        self.shutdown = shutdown  # ends the shim (Shutdown of a shim serving nothing)
        self.settings = settings  # the host's configuration as `start` read it (shim.config)


class Shim:
    """A shim's hooks. Subclass it and override what your shim does differently."""

    runtime = "io.containerd.shim.v1"  # the runtime name when the binary's name gives none
    module = ""  # the module holding this shim as SHIM
    summary = "a containerd runtime v2 shim"  # the command line's help
    # The shim's own table in the host's configuration file (pyrunc.shim.config), and its keys:
    # {name: (type, default)}; the values reach services() as ctx.settings.section(table).
    config_table = ""
    config: Mapping[str, tuple[type, Any]] = {}

    def services(self, ctx: ShimContext) -> Mapping[str, Mapping[str, Method]]:
        """{service name: {method name: Method}} to serve over ttrpc."""
        raise NotImplementedError

    def group(self, bundle: str, id: str) -> str:
        """The group whose shim serves container `id` (default: a shim per container). Raise
        ValueError for an id or bundle that must not be served; `start` then fails with it."""
        return id

    def start_options(self, pid: int, options: bytes) -> None:
        """Apply the runtime options containerd gave `start` (a binary Any, b"" for none) to
        the new shim `pid`; raise ValueError for options that do not decode."""

    def delete(self, namespace: str, id: str, bundle: str) -> int:
        """The `delete` action: clean up what a shim that is gone left of container `id`, and
        return the init pid to report (0 if unknown). Warnings go to stderr (containerd logs
        it); raise ValueError for a request that must be refused."""
        return 0

    def info(self, runtime: str, options: bytes) -> bytes:
        """The `-info` action: an encoded RuntimeInfo for the options on stdin; raise ShimError
        to fail with its text."""
        raise ShimError("this shim does not answer -info")

    def prepare(self, directory: str) -> None:
        """Run in the warm parent before it forks any shim (directory: private scratch space):
        import and exercise what every shim will use, so the forked shims share it."""


def load_shim(module: str) -> Shim:
    """The SHIM of a shim module; ValueError if `module` names none."""
    import importlib

    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"not a shim module name: {module!r}")
    try:
        shim = getattr(importlib.import_module(module), "SHIM", None)
    except ImportError as e:
        raise ValueError(f"cannot load shim module {module}: {e}") from e
    if not isinstance(shim, Shim):
        raise ValueError(f"module {module} has no SHIM")
    return shim
