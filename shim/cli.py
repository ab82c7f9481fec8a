"""The command line, with the flags exactly as containerd passes them to a runtime v2 shim.

main(shim) is a shim binary's whole program: a shim built on the framework calls it with its
Shim (pyrunc.shim.api), whose hooks then answer for what differs between shims.

containerd speaks Go's flag syntax: a single dash before long names (`-namespace default`),
flags first, then the action: `start`, `delete`, or none for the long-running shim itself.

`start` and `delete` are on the path of every container start and stop, so the command lines
containerd actually sends are parsed by a small Go-flag parser before anything else is imported;
so are `-v` and `-info` (containerd 1.7 and 2.x run `-info` to learn what the runtime supports).
Everything else (help, mistakes) goes to click, built from the same table of flags.

The runtime name is the one the binary was run as: containerd runs runtime
`io.containerd.X.vN` as `containerd-shim-X-vN`, so an installation linked under another name
(`containerd-shim-runc-v2`, to stand in for the Go shim) logs, titles its processes and
answers `-v` and `-info` as that runtime.
"""

from __future__ import annotations

import sys

from pyrunc.shim import __version__
from pyrunc.shim.names import binary_name_of, runtime_name_of, shim_title

TYPE_CHECKING = False  # typing is not imported at run time: start and delete are hot
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from pyrunc.shim.api import Shim

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
    "info": (True, "read runtime options on stdin, print the runtime's RuntimeInfo (protobuf) "
             "and exit"),
    "version": (True, "print the version and exit"),
    # pyrunc's own: `start` names the runtime to the shim it spawns (whose own argv[0] is
    # Python's), so that the shim logs under the name containerd ran `start` as.
    "runtime-name": (False, "runtime name to log and answer as (default: from the binary's "
                     "name)"),
    # And the host configuration's settings as `start` read them (pyrunc.shim.config).
    "settings": (False, "settings from the host's configuration file, as start read them"),
}
ALIASES = {"v": "version"}  # Go's shim takes both -v and -version
ACTIONS = ("start", "delete")


def parse_go_flags(argv: Sequence[str]) -> dict[str, Any] | None:
    """Go's flag syntax for FLAGS followed by an optional action; None if argv is anything else
    (unknown flags, -h, stray words): click then explains."""
    values: dict[str, Any] = {name.replace("-", "_"): (False if boolean else "")
                              for name, (boolean, _) in FLAGS.items()}
    values["action"] = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        name = ALIASES.get(name, name)
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


def run(shim: Shim, *, namespace: str, id: str, address: str, publish_binary: str, bundle: str,
        socket: str, debug: bool, debug_socket: str, action: str | None, version: bool = False,
        info: bool = False, runtime_name: str = "", settings: str = "") -> int:
    runtime = runtime_name or runtime_name_of(sys.argv[0], shim.runtime)
    # As the Go shim: -v, then -info, win over any action.
    if version:
        print(f"{binary_name_of(runtime)}:\n  Version: {__version__}\n  Runtime: {runtime}")
        return 0
    if info:
        return _info(shim, runtime)
    if action == "start":
        from pyrunc.shim import manager

        return manager.start(shim, namespace=namespace, id=id, address=address, debug=debug,
                             socket_path=socket, runtime=runtime)
    if action == "delete":
        from pyrunc.shim import manager

        return manager.delete(shim, namespace=namespace, id=id, bundle=bundle, debug=debug)
    if runtime_name:  # started by `start` without a warm parent: look like a forked shim
        import prctl

        prctl.set_proctitle(shim_title(runtime, namespace, id, address, debug))
    from pyrunc.shim import daemon

    return daemon.run(shim, namespace=namespace, id=id, address=address, debug=debug,
                      socket_path=socket, runtime=runtime, settings=settings)


def _info(shim: Shim, runtime: str) -> int:
    """The -info action: RuntimeInfo on stdout and 0, or the error on stderr and 1."""
    from pyrunc.shim.api import ShimError

    options = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        out = shim.info(runtime, options)
    except ShimError as e:
        sys.stderr.write(f"{runtime}: {e}")  # (no newline, as the Go shim)
        sys.stderr.flush()
        return 1
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0


def main(shim: Shim) -> None:
    """The shim binary: containerd's command line, for `shim`."""
    values = parse_go_flags(sys.argv[1:])
    if values is not None:
        code = run(shim, **values)
        if values["action"] in ACTIONS and not (values["version"] or values["info"]):
            _exit(code)
        sys.exit(code)
    _click_command(shim)(prog_name=binary_name_of(runtime_name_of(sys.argv[0], shim.runtime)))


def _exit(code: int) -> None:
    """End `start` or `delete` without the interpreter's finalization, which costs about 1.2 ms,
    more than a third of what each may take over the bare interpreter, and does nothing for them:
    they hold no buffered files and leave no threads behind. What an ordinary exit would still
    do, they do first: run the atexit handlers (as a rare path may have registered one) and
    flush stdout and stderr. If the flush fails (containerd closed the pipe), the ordinary exit
    reports it as it always did."""
    import atexit
    import posix  # the C module behind os, loaded with the interpreter

    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:
        sys.exit(code)
    posix._exit(code)


def _click_command(shim: Shim) -> Any:

    import click

    def callback(**values: Any) -> None:
        if values["action"] not in (None, *ACTIONS):
            raise click.UsageError(
                f'unknown action "{values["action"]}": expected start, delete or none')
        sys.exit(run(shim, **values))

    params: list[click.Parameter] = [
        click.Option([f"-{name}", f"--{name}", *(f"-{a}" for a, n in ALIASES.items()
                                                  if n == name)],
                     is_flag=boolean, default=False if boolean else "", help=help)
        for name, (boolean, help) in FLAGS.items()
    ]
    params.append(click.Argument(["action"], required=False))
    return click.Command(
        binary_name_of(shim.runtime), callback=callback, params=params, help=shim.summary,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
