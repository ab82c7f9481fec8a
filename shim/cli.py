"""The command line, with the flags exactly as containerd passes them to a runtime v2 shim.

containerd speaks Go's flag syntax: a single dash before long names (`-namespace default`),
flags first, then the action: `start`, `delete`, or none for the long-running shim itself.

`start` and `delete` are on the path of every container start and stop, so the command lines
containerd actually sends are parsed by a small Go-flag parser before anything else is imported;
everything else (help, versions, mistakes) goes to click, built from the same table of flags.
"""

from __future__ import annotations

import sys

from pyrunc.shim import __version__

TYPE_CHECKING = False  # typing is not imported at run time: start and delete are hot
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

RUNTIME_NAME = "io.containerd.pyrunc.v1"

# name -> (is a boolean flag, help). The one place the flags are declared.
FLAGS: dict[str, tuple[bool, str]] = {
    "namespace": (False, "containerd namespace"),
    "id": (False, "container (task) id"),
    "address": (False, "containerd's gRPC socket address"),
    "publish-binary": (False, "containerd binary for publishing events (unused: events go over "
                       "ttrpc)"),
    "bundle": (False, "the bundle path (delete)"),
    "socket": (False, "socket path to serve on (instead of fd 3)"),
    "debug-socket": (False, "ignored"),
    "debug": (True, "log at debug level"),
}
ACTIONS = ("start", "delete")


def parse_go_flags(argv: Sequence[str]) -> dict[str, Any] | None:
    """Go's flag syntax for FLAGS followed by an optional action; None if argv is anything else
    (unknown flags, -h, -v, stray words): click then explains."""
    values: dict[str, Any] = {name.replace("-", "_"): (False if boolean else "")
                              for name, (boolean, _) in FLAGS.items()}
    values["action"] = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in FLAGS:
            return None
        boolean = FLAGS[name][0]
        if boolean:
            if has_value and value not in ("true", "false", "1", "0"):
                return None
            values[name.replace("-", "_")] = value in ("", "true", "1") if has_value else True
        elif has_value:
            values[name.replace("-", "_")] = value
        else:
            if i + 1 >= len(argv):
                return None
            i += 1
            values[name.replace("-", "_")] = argv[i]
        i += 1
    rest = argv[i:]
    if len(rest) > 1 or (rest and rest[0] not in ACTIONS):
        return None
    values["action"] = rest[0] if rest else None
    return values


def run(*, namespace: str, id: str, address: str, publish_binary: str, bundle: str, socket: str,
        debug: bool, debug_socket: str, action: str | None, version: bool = False) -> int:
    if version:
        print(f"containerd-shim-pyrunc-v1:\n  Version: {__version__}\n  Runtime: {RUNTIME_NAME}")
        return 0
    if action == "start":
        from pyrunc.shim import manager

        return manager.start(namespace=namespace, id=id, address=address, debug=debug,
                             socket_path=socket)
    if action == "delete":
        from pyrunc.shim import manager

        return manager.delete(namespace=namespace, id=id, bundle=bundle, debug=debug)
    without_ssl()
    from pyrunc.shim import daemon

    return daemon.run(namespace=namespace, id=id, address=address, debug=debug,
                      socket_path=socket)


def without_ssl() -> None:
    """asyncio imports ssl, which maps OpenSSL and costs a shim about 4 MiB; a shim never speaks
    TLS (unix sockets only), so tell asyncio there is no ssl. For shim processes only."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def main() -> None:
    values = parse_go_flags(sys.argv[1:])
    if values is not None:
        sys.exit(run(**values))
    _click_command()(prog_name="containerd-shim-pyrunc-v1")


def _click_command() -> Any:

    import click

    def callback(**values: Any) -> None:
        if values["action"] not in (None, *ACTIONS):
            raise click.UsageError(
                f"unknown action {values['action']!r}: expected start, delete or none")
        sys.exit(run(**values))

    params: list[click.Parameter] = [
        click.Option([f"-{name}", f"--{name}"], is_flag=boolean, default=False if boolean else "",
                     help=help)
        for name, (boolean, help) in FLAGS.items()
    ]
    params.append(click.Option(["-v", "--version"], "version", is_flag=True, default=False,
                               help="print the version and exit"))
    params.append(click.Argument(["action"], required=False))
    return click.Command(
        "containerd-shim-pyrunc-v1", callback=callback, params=params,
        help="containerd runtime v2 shim for runc, written in Python.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
