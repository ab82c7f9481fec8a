"""The command line, with the flags exactly as containerd passes them to a runtime v2 shim.

containerd speaks Go's flag syntax: a single dash before long names (`-namespace default`),
flags first, then the action: `start`, `delete`, or none for the long-running shim itself.
Each action imports only what it needs: `start` is on the path of every container start.
"""

from __future__ import annotations

import sys

import click

from pyrunc.shim import __version__

RUNTIME_NAME = "io.containerd.pyrunc.v1"


def _opt(name: str, **kwargs: object) -> click.Option:
    return click.Option([f"-{name}", f"--{name}"], **kwargs)  # type: ignore[arg-type]


def _run(
    namespace: str, id: str, address: str, publish_binary: str, bundle: str, socket: str,
    debug: bool, debug_socket: str, version: bool, action: str | None,
) -> None:
    if version:
        click.echo(f"containerd-shim-pyrunc-v1:\n  Version: {__version__}\n"
                   f"  Runtime: {RUNTIME_NAME}")
        return
    if action == "start":
        from pyrunc.shim import manager

        sys.exit(manager.start(namespace=namespace, id=id, address=address, debug=debug,
                               socket_path=socket))
    if action == "delete":
        from pyrunc.shim import manager

        sys.exit(manager.delete(namespace=namespace, id=id, bundle=bundle, debug=debug))
    if action is None:
        from pyrunc.shim import daemon

        sys.exit(daemon.run(namespace=namespace, id=id, address=address, debug=debug,
                            socket_path=socket))
    raise click.UsageError(f"unknown action {action!r}: expected start, delete or none")


main = click.Command(
    "containerd-shim-pyrunc-v1",
    callback=_run,
    help="containerd runtime v2 shim for runc, written in Python.",
    context_settings={"help_option_names": ["-h", "--help"]},
    params=[
        _opt("namespace", default="", help="containerd namespace"),
        _opt("id", default="", help="container (task) id"),
        _opt("address", default="", help="containerd's gRPC socket address"),
        _opt("publish-binary", default="",
             help="containerd binary for publishing events (unused: events go over ttrpc)"),
        _opt("bundle", default="", help="the bundle path (delete)"),
        _opt("socket", default="", help="socket path to serve on (instead of fd 3)"),
        _opt("debug-socket", default="", help="ignored"),
        _opt("debug", is_flag=True, default=False, help="log at debug level"),
        click.Option(["-v", "--version"], "version", is_flag=True, default=False,
                     help="print the version and exit"),
        click.Argument(["action"], required=False),
    ],
)
