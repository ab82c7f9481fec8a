"""A client for the runc command line, as containerd's shims drive it.

Every invocation runs through a ProcessMonitor (never waitpid here) and blocks its caller's thread
until runc has been reaped. runc is
always given `--log <bundle>/log.json --log-format json`: when a command fails, the error that
reaches containerd is runc's own last logged error, not just an exit status. Only the part of the
log written by the failing invocation is read, so an old error is never reported as a new one.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported at run time: `delete` loads this module
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from pyrunc.oci.monitor import ExitWatch, ProcessMonitor
    from pyrunc.oci.options import CheckpointOpts, RuntimeOptions

DEFAULT_RUNC_ROOT = "/run/containerd/runc"


class RuncError(Exception):
    """A runc invocation that failed; `message` is runc's own explanation."""

    def __init__(self, command: str, status: int, message: str, output: str = "") -> None:
        self.command = command
        self.status = status
        self.message = message
        self.output = output
        super().__init__(message)

    @property
    def not_exist(self) -> bool:
        text = f"{self.message} {self.output}"
        return "does not exist" in text or "not exist" in text

    @property
    def process_finished(self) -> bool:
        text = f"{self.message} {self.output}".lower()
        return any(
            marker in text
            for marker in ("process already finished", "container not running", "no such process")
        )


def read_until_eof(fd: int) -> bytes:
    """Read a blocking fd to EOF, then close it."""
    chunks: list[bytes] = []
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    finally:
        os.close(fd)


class Runc:
    """runc for one bundle: `root` is runc's state root (per namespace), `log` its log.json.

    A plain class, not a dataclass: the `delete` action builds runc's command line from it and
    must not pay for importing dataclasses.
    """

    def __init__(self, monitor: ProcessMonitor, root: str, log: str, binary: str = "runc",
                 systemd_cgroup: bool = False, env: dict[str, str] | None = None) -> None:
        self.monitor = monitor
        self.root = root
        self.log = log
        self.binary = binary
        self.systemd_cgroup = systemd_cgroup
        self.env = env

    def argv(self, *args: str) -> list[str]:
        """The command line of `runc <args>` with this client's global options."""
        argv = [self.binary, "--root", self.root, "--log", self.log, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv.extend(args)
        return argv

    def _log_size(self) -> int:
        try:
            return os.stat(self.log).st_size
        except OSError:
            return 0

    def last_error(self, since: int = 0) -> str:
        """The last error runc logged after byte offset `since` of its log, or ''."""
        try:
            return self._logged_error(since)
        except OSError:
            return ""

    def _logged_error(self, since: int) -> str:
        """last_error(), raising OSError when the log cannot be read."""
        import json

        with open(self.log, "rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") == "error":
                return str(entry.get("msg", ""))
        return ""

    def _run(
        self,
        *args: str,
        stdio: tuple[int | None, int | None, int | None] | None = None,
        extra_fds: Sequence[int] = (),
        input: bytes | None = None,
    ) -> bytes:
        """Run runc; with stdio=None its combined output is captured and returned.

        With stdio given (create/exec/run hand the container's stdio to runc), runc's own
        output goes there and only log.json explains a failure.
        """
        argv = self.argv(*args)
        since = self._log_size()
        out_r = -1
        if stdio is None:
            in_r = _input_pipe(input) if input is not None else None
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            try:
                exited = self._spawn(
                    args[0], since, argv, stdin=in_r, stdout=out_w, stderr=out_w,
                    extra_fds=extra_fds,
                )
            except BaseException:
                os.close(out_r)
                raise
            finally:
                os.close(out_w)
                if in_r is not None:
                    os.close(in_r)
            output = read_until_eof(out_r)
        else:
            exited = self._spawn(
                args[0], since, argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                extra_fds=extra_fds,
            )
            output = b""
        status = exited.result().status
        if status != 0:
            text = output.decode(errors="replace").strip()
            raise self._error(args[0], status, since,
                              text or f"{self.binary} exited with status {status}", text)
        return output

    def _spawn(self, command: str, since: int, argv: list[str], *, stdin: int | None,
               stdout: int | None, stderr: int | None, extra_fds: Sequence[int]
               ) -> ExitWatch:
        """Start runc; a runc that cannot be started (not found, not executable) is a
        RuncError worded as Go's os/exec words it."""
        try:
            _, exited = self.monitor.spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                           env=self.env, extra_fds=extra_fds)
        except OSError as e:
            from pyrunc.oci.errors import start_failure

            raise self._error(command, -1, since, start_failure(self.binary, e)) from e
        return exited

    def _error(self, command: str, status: int, since: int, cause: str, output: str = ""
               ) -> RuncError:
        """A failed invocation, explained as the Go shim's runtimeError does: by runc's own last
        logged error; failing that by the cause (its output, or why it did not start), after
        why runc's log could not be read when it could not (when runc never ran, say: then
        the Go shim too reports `unable to retrieve OCI runtime error (open …/log.json: no
        such file or directory)`)."""
        try:
            message = self._logged_error(since) or cause
        except OSError as e:
            from pyrunc.oci.errors import describe

            message = f"unable to retrieve OCI runtime error ({describe(e, 'open')}): {cause}"
        return RuncError(command, status, message, output)

    def create(
        self,
        id: str,
        bundle: str,
        pid_file: str,
        *,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None:
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        self._run(*args, id, stdio=stdio)

    def start(self, id: str) -> None:
        self._run("start", id)

    def delete(self, id: str, *, force: bool = False) -> None:
        self._run("delete", *(["--force"] if force else []), id)

    def kill(self, id: str, signal: int, *, all: bool = False) -> None:
        self._run("kill", *(["--all"] if all else []), id, str(signal))

    def exec(
        self,
        id: str,
        process_file: str,
        pid_file: str,
        *,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None = None,
    ) -> None:
        """`runc exec --detach`: the process runs on, re-parented to the shim when runc exits."""
        args = ["exec", "--detach", "--process", process_file, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        self._run(*args, id, stdio=stdio)

    def pause(self, id: str) -> None:
        self._run("pause", id)

    def resume(self, id: str) -> None:
        self._run("resume", id)

    def update(self, id: str, resources_json: bytes) -> None:
        """`runc update --resources -`: LinuxResources as JSON on runc's stdin."""
        self._run("update", "--resources", "-", id, input=resources_json)

    def checkpoint(self, id: str, opts: CheckpointOpts) -> None:
        self._run("checkpoint", *opts.args(), *(
            [] if opts.exit else ["--leave-running"]
        ), id)

    def restore(
        self,
        id: str,
        bundle: str,
        pid_file: str,
        opts: CheckpointOpts,
        *,
        stdio: tuple[int | None, int | None, int | None],
        console_socket: str | None = None,
        no_pivot: bool = False,
    ) -> None:
        args = ["restore", "--detach", "--pid-file", pid_file, "--bundle", bundle]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        self._run(*args, *opts.args(), id, stdio=stdio)

    def state(self, id: str) -> dict[str, Any]:
        import json

        state: dict[str, Any] = json.loads(self._run("state", id))
        return state

    def ps(self, id: str) -> list[int]:
        import json

        pids = json.loads(self._run("ps", "--format", "json", id))
        return [int(p) for p in pids or []]


def runc_for(bundle: str, namespace: str, options: RuntimeOptions,
             monitor: ProcessMonitor) -> Runc:
    """runc as containerd's shims run it for a bundle: state under <root>/<namespace>, errors
    logged as JSON to <bundle>/log.json."""
    return Runc(
        monitor=monitor,
        root=os.path.join(options.root or DEFAULT_RUNC_ROOT, namespace),
        log=os.path.join(bundle, "log.json"),
        binary=options.binary_name or "runc",
        systemd_cgroup=options.systemd_cgroup,
    )


def _input_pipe(data: bytes) -> int:
    """A pipe holding data (small: it must fit the pipe buffer), for a child's stdin."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        if len(data) > 65536:
            import fcntl

            fcntl.fcntl(w, 1031, len(data))  # F_SETPIPE_SZ
        os.write(w, data)
    finally:
        os.close(w)
    return r


def read_pid_file(path: str) -> int:
    """runc writes the pid file atomically; 0 when there is none (yet)."""
    try:  # (no contextlib: the delete action imports this module)
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0
