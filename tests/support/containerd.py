"""A private containerd for tests, and a census of what a test left behind.

`Containerd` runs its own containerd daemon with its own root, state and sockets in a short
temporary directory, so tests never touch a system containerd. The shim binary is found on the
daemon's PATH, whose first entry is the directory of the running interpreter (the venv's bin, where
`containerd-shim-pyrunc-v1` is installed).

Some things a shim makes are not inside that directory: containerd 1.6 puts shim sockets in
`/run/containerd/s/`, and runc keeps container state in `/run/containerd/runc/<namespace>/` and
cgroups in `/sys/fs/cgroup/<controller>/<namespace>/`. `leftovers()` looks there too, and counts
only what belongs to this daemon (or appeared after it started), so another containerd on the
machine is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

PYRUNC_SHIM = "containerd-shim-pyrunc-v1"
RUNC_SHIM = "containerd-shim-runc-v2"
# Other names a shim's processes may show in their command line.
SHIM_ALIASES = {PYRUNC_SHIM: ("pyrunc.shim",)}
DEFAULT_NAMESPACE = "pyrunc-test"
TASK_PLUGIN = "io.containerd.runtime.v2.task"
SHIM_SOCKET_DIR = Path("/run/containerd/s")
RUNC_ROOT = Path("/run/containerd/runc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ShimBinaries = str | Sequence[str]


class CtrError(subprocess.CalledProcessError):
    """`ctr` exited non-zero; the message carries its output and the end of containerd's log."""

    def __init__(
        self, cmd: list[str], returncode: int, stdout: bytes, stderr: bytes, log_tail: str
    ) -> None:
        super().__init__(returncode, cmd, stdout, stderr)
        self.log_tail = log_tail

    def __str__(self) -> str:
        out = _tail_text(self.stdout or b"", 20)
        err = _tail_text(self.stderr or b"", 20)
        return (
            f"{' '.join(self.cmd)} exited {self.returncode}\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}\n"
            f"--- containerd log (tail) ---\n{self.log_tail}"
        )


@dataclass(frozen=True)
class Task:
    """One line of `ctr task ls`."""

    id: str
    pid: int
    status: str


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the parts the census needs)."""

    mount_point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class _Process:
    pid: int
    argv: list[str] = field(hash=False)

    def describe(self) -> str:
        return f"shim process {self.pid}: {' '.join(self.argv)[:300]}"


def _tail_text(data: bytes, lines: int) -> str:
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _unescape_mountinfo(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def read_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    """The mount table of this process's mount namespace."""
    mounts = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        mounts.append(MountEntry(_unescape_mountinfo(fields[4]), rest[0], rest[1]))
    return mounts


def _is_below(path: str, parent: Path) -> bool:
    return path == str(parent) or path.startswith(str(parent).rstrip("/") + "/")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process exited, or is a kernel thread
        return b""


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _is_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie that nobody reaps counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until all `pids` have exited; return those that have not."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        pending = {pid for pid in pending if not _is_gone(pid)}
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return sorted(pending)


NETSTATS_HELPER = b"pyrunc.oci.netstats"


def warm_parents(module: bytes = b"pyrunc.shim.warm") -> set[int]:
    """pyrunc's warm parent processes (`python -m pyrunc.shim.warm`) on this machine, or with
    `module` pyrunc.oci.netstats, its network statistics helpers: node-wide processes the shims
    start. (A warm parent's title is its command line, in one string: it sets it once for
    python-prctl's sake.)"""
    found = set()
    for pid in _pids():
        argv = _read_bytes(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").split()
        if module in argv:
            found.add(pid)
    return found


def remove_cached_settings(config: Path, run_dir: Path = Path("/run/pyrunc")) -> None:
    """`start` caches what it read from a host configuration file in /run/pyrunc/config-<hash>,
    the file's path and stat on the first line: a node keeps one such file per path it uses. A
    test or bench that names a configuration file of its own removes the caches of that path."""
    for cache in run_dir.glob("config-*"):
        with contextlib.suppress(OSError), cache.open("rb") as f:
            if f.readline().startswith(str(config).encode() + b"\0"):
                cache.unlink()


def _binaries(runtime_binary: ShimBinaries) -> tuple[str, ...]:
    return (runtime_binary,) if isinstance(runtime_binary, str) else tuple(runtime_binary)


def _cgroup_dirs(namespace: str) -> list[Path]:
    """Per-container cgroups containerd's default spec asks for: `/<namespace>/<id>`."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    candidates = [CGROUP_ROOT / namespace]  # cgroup v2 (unified at the root)
    candidates += [
        entry / namespace
        for entry in CGROUP_ROOT.iterdir()
        if entry.is_dir() and not entry.is_symlink()
    ]
    for ns_dir in candidates:
        if ns_dir.is_dir():
            found += sorted(p for p in ns_dir.iterdir() if p.is_dir())
    return found


def _cgroup_pids(path: Path) -> list[int]:
    text = _read_bytes(path / "cgroup.procs").decode()
    return [int(line) for line in text.split()]


def _unix_listeners() -> dict[str, int]:
    """Path -> inode of the listening Unix sockets (of this network namespace)."""
    listeners = {}
    for line in _read_bytes(Path("/proc/net/unix")).decode(errors="replace").splitlines()[1:]:
        # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON.
        parts = line.split(None, 7)
        if len(parts) == 8 and int(parts[3], 16) & 0x10000:
            listeners[parts[7]] = int(parts[6])
    return listeners


def _socket_owners(inodes: set[int]) -> dict[int, set[int]]:
    """Inode -> pids holding that socket open."""
    owners: dict[int, set[int]] = {}
    if not inodes:
        return owners
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for pid in _pids():
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    inode = wanted.get(os.readlink(fd.path))
                    if inode is not None:
                        owners.setdefault(inode, set()).add(pid)
    return owners


class Containerd:
    """A private containerd daemon, started by `start()` or `with Containerd() as ctd:`.

    `base_dir` defaults to a fresh directory under /tmp, removed again on leaving the `with`. If a
    `base_dir` is given and a daemon of an earlier run still lives there, that daemon is killed and
    what it left behind is removed before the new one starts.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        log_level: str = "info",
        containerd_binary: str = "containerd",
        ctr_binary: str = "ctr",
        start_timeout: float = 30.0,
        drop_in: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._own_base = base_dir is None
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="pyrunc-", dir="/tmp")).absolute()
        self.namespace = namespace
        self.log_level = log_level
        self.containerd_binary = containerd_binary
        self.ctr_binary = ctr_binary
        self.start_timeout = start_timeout
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.address = str(self.base / "containerd.sock")
        self.ttrpc_address = str(self.base / "containerd.sock.ttrpc")
        self.config_path = self.base / "config.toml"
        self.log_path = self.base / "containerd.log"
        self.pid_path = self.base / "containerd.pid"
        self.shim_path_dir = Path(sys.executable).parent  # not resolved: the venv's bin
        # With drop_in, pyrunc is also installed as containerd-shim-runc-v2 (a symlink, as an
        # operator would make it) in a directory ahead of everything on the daemon's PATH.
        self.drop_in_dir = self.base / "drop-in" if drop_in else None
        self.extra_env = dict(env or {})  # for the daemon, and so for start and the shims
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._sockets_before: set[str] = set()
        self._cgroups_before: set[Path] = set()
        self._seen_ids: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Containerd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.cleanup_leftovers((PYRUNC_SHIM, RUNC_SHIM))
        finally:
            self.stop()
            if self._own_base:
                self.remove_base_dir()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("containerd already started")
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o711)
        self._kill_stale_daemon()
        if self.state.exists() or self.root.exists():
            # An earlier run's leftovers. What is below our dirs is ours; outside them, only what
            # can be traced to them (runc state naming a bundle of ours, a shim socket of ours).
            self._take_baseline()
            self.cleanup_leftovers((PYRUNC_SHIM, RUNC_SHIM))
        for sock in (self.address, self.ttrpc_address):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        self.config_path.write_text(self.config_toml())
        self._take_baseline()
        self._warm_before = warm_parents() | warm_parents(NETSTATS_HELPER)
        self._launch()

    def restart(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        """Stop the daemon (SIGTERM, or SIGKILL with kill=True) and start it again on the same
        config and state, touching nothing else: its shims and containers live on."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            proc.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None
        time.sleep(down_for)
        for sock in (self.address, self.ttrpc_address):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        self._launch()

    def _launch(self) -> None:
        env = {**os.environ, **self.extra_env}
        path = [str(self.shim_path_dir), *env.get("PATH", "").split(":"), *STANDARD_PATH.split(":")]
        if os.sep in self.containerd_binary:  # another containerd's own Go shim, not the system's
            path.insert(1, os.path.dirname(os.path.abspath(self.containerd_binary)))
        if self.drop_in_dir is not None:
            self.drop_in_dir.mkdir(exist_ok=True)
            link = self.drop_in_dir / RUNC_SHIM
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(self.shim_path_dir / PYRUNC_SHIM)
            path.insert(0, str(self.drop_in_dir))
        env["PATH"] = ":".join(dict.fromkeys(p for p in path if p))
        env.pop("NOTIFY_SOCKET", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- lives as long as the daemon
        self._proc = subprocess.Popen(
            [self.containerd_binary, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C of the test run must not kill it before cleanup
        )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _take_baseline(self) -> None:
        """Note what exists outside our dirs before the daemon starts, to tell ours apart later."""
        self._sockets_before = self._shim_sockets()
        self._cgroups_before = set(_cgroup_dirs(self.namespace))

    def config_toml(self) -> str:
        def q(value: str | Path) -> str:
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
        ]
        return "\n".join(
            [
                "version = 2",
                f"root = {q(self.root)}",
                f"state = {q(self.state)}",
                "oom_score = 0",
                "disabled_plugins = [" + ", ".join(q(p) for p in disabled) + "]",
                'required_plugins = ["io.containerd.snapshotter.v1.overlayfs"]',
                "",
                "[grpc]",
                f"  address = {q(self.address)}",
                "",
                "[ttrpc]",
                f"  address = {q(self.ttrpc_address)}",
                "",
                "[debug]",
                '  address = ""',
                f"  level = {q(self.log_level)}",
                "",
                "[metrics]",
                '  address = ""',
                "",
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {q(self.base / 'opt')}",
                "",
                '[plugins."io.containerd.snapshotter.v1.overlayfs"]',
                '  root_path = ""',
                "",
            ]
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"containerd exited at start:\n{self.log_tail(30)}")
            if os.path.exists(self.address):
                try:
                    res = self.ctr("version", timeout=5, check=False)
                except subprocess.TimeoutExpired:
                    last = "ctr version timed out"
                else:
                    if res.returncode == 0:
                        return
                    last = _tail_text(res.stderr, 3)
            time.sleep(0.05)
        raise TimeoutError(
            f"containerd did not answer within {self.start_timeout} s ({last})\n{self.log_tail(30)}"
        )

    def _kill_stale_daemon(self) -> None:
        """Kill a containerd of an earlier run that used this base dir (e.g. after a crash)."""
        stale: set[int] = set()
        with contextlib.suppress(OSError, ValueError):
            stale.add(int(self.pid_path.read_text().strip()))
        config = str(self.config_path).encode()
        for pid in _pids():
            argv = _read_bytes(Path(f"/proc/{pid}/cmdline")).split(b"\0")
            if argv and os.path.basename(argv[0]) == b"containerd" and config in argv:
                stale.add(pid)
        for pid in stale:
            argv = _read_bytes(Path(f"/proc/{pid}/cmdline")).split(b"\0")
            # A recycled pid from the pid file must not be killed: check it is that daemon.
            if pid != os.getpid() and config in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_gone(stale, 10)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon: SIGTERM, then SIGKILL after `timeout` s. Shims are left running."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(OSError):
            (RUNC_ROOT / self.namespace).rmdir()  # only if empty
        # pyrunc's warm parent is node-wide; one this daemon's shims started goes with it.
        # So is the network statistics helper.
        started = (warm_parents() | warm_parents(NETSTATS_HELPER)) - getattr(
            self, "_warm_before", set())
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(started, timeout)
        # runc removes /<namespace>/<id> cgroups but not their /<namespace> parents.
        if CGROUP_ROOT.is_dir():
            for controller in CGROUP_ROOT.iterdir():
                with contextlib.suppress(OSError):
                    (controller / self.namespace).rmdir()  # only if empty

    def remove_base_dir(self) -> None:
        """Remove the base dir, unless something is still mounted below it."""
        if self.running():
            raise RuntimeError("containerd is still running")
        self._unmount(m.mount_point for m in read_mounts() if _is_below(m.mount_point, self.base))
        still = [m.mount_point for m in read_mounts() if _is_below(m.mount_point, self.base)]
        if still:
            raise RuntimeError(f"not removing {self.base}: still mounted: {still}")
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, n: int = 50) -> str:
        """The last `n` lines of containerd's log (which also holds the shims' logs)."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no containerd log)"
        return _tail_text(data[-256 * 1024 :], n)

    # ---- ctr -------------------------------------------------------------------------------

    def ctr(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `ctr -a ADDRESS -n NAMESPACE ARGS...`, stdin from `input` (or /dev/null)."""
        cmd = [self.ctr_binary, "-a", self.address, "-n", self.namespace, *args]
        try:
            if input is None:
                res = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
                )
            else:
                res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            e.add_note(f"--- containerd log (tail) ---\n{self.log_tail(30)}")
            raise
        if check and res.returncode != 0:
            raise CtrError(cmd, res.returncode, res.stdout, res.stderr, self.log_tail(30))
        return res

    def import_image(self, tar: Path, name: str, timeout: float = 120) -> str:
        """`ctr image import` (unpacking to the overlayfs snapshotter); returns `name`."""
        self.ctr("images", "import", str(tar), timeout=timeout)
        if name not in self.images():
            raise RuntimeError(f"{tar} imported, but no image named {name}: {self.images()}")
        return name

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.decode().split()

    def containers(self) -> list[str]:
        return self.ctr("containers", "ls", "-q").stdout.decode().split()

    def tasks(self) -> list[Task]:
        tasks = []
        lines = self.ctr("tasks", "ls").stdout.decode().splitlines()
        for line in lines[1:]:  # header: TASK PID STATUS
            parts = line.split()
            if len(parts) >= 3:
                tasks.append(Task(parts[0], int(parts[1]), parts[2]))
        return tasks

    def status(self, container_id: str) -> str | None:
        """The task's status as `ctr task ls` shows it (RUNNING, STOPPED, ...), None if none."""
        return next((t.status for t in self.tasks() if t.id == container_id), None)

    def wait_for_status(self, container_id: str, status: str | None,
                        timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.status(container_id) != status:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {container_id} never became {status}: {self.tasks()}")
            time.sleep(0.05)

    def remove(self, container_id: str) -> None:
        """Whatever state it is in: resume, kill, delete the task, remove the container."""
        self.ctr("task", "resume", container_id, check=False)
        self.ctr("task", "kill", "-s", "SIGKILL", container_id, check=False)
        # Kill answers once the signal is sent; until the exit is reaped, ctr refuses to delete
        # a task it sees running (and the container then cannot be removed either).
        deadline = time.monotonic() + 15
        while True:
            deleted = self.ctr("task", "delete", container_id, check=False, timeout=30)
            if b"must be stopped" not in deleted.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.ctr("container", "rm", container_id, check=False)

    # ---- the census --------------------------------------------------------------------------

    def _task_dirs(self) -> list[Path]:
        """Task bundles (state) and work dirs (root) of every namespace."""
        found = []
        for top in (self.state / TASK_PLUGIN, self.root / TASK_PLUGIN):
            if top.is_dir():
                for ns in sorted(top.iterdir()):
                    if ns.is_dir():
                        found += sorted(ns.iterdir())
        return found

    def _namespaces(self) -> list[str]:
        names = {self.namespace}
        for top in (self.state / TASK_PLUGIN, self.root / TASK_PLUGIN):
            if top.is_dir():
                names |= {p.name for p in top.iterdir() if p.is_dir()}
        return sorted(names)

    def _runc_state_dirs(self) -> list[Path]:
        """runc's state dirs in the default root of the namespaces this daemon uses."""
        found = []
        for ns in self._namespaces():
            ns_dir = RUNC_ROOT / ns
            if ns_dir.is_dir():
                found += sorted(p for p in ns_dir.iterdir() if p.is_dir())
        return found

    def _owned_runc_state_dirs(self) -> list[Path]:
        owned = []
        marker = str(self.state).encode() + b"/"
        ids = self._seen_ids | {p.name for p in self._task_dirs()}
        for path in self._runc_state_dirs():
            state = _read_bytes(path / "state.json")
            # runc records the bundle (a label "bundle=<path>"), which is in our state dir. Without
            # a state.json (runc died half-way), go by the container id.
            if marker in state or (not state and path.name in ids):
                owned.append(path)
        return owned

    def _known_ids(self) -> set[str]:
        """Ids of containers this daemon has had (as far as its dirs and runc tell, ever)."""
        paths = [*self._task_dirs(), *self._owned_runc_state_dirs()]
        self._seen_ids |= {p.name for p in paths}
        return self._seen_ids

    def _owned_cgroups(self) -> list[Path]:
        # New since start is not enough: another containerd may use the same namespace.
        ids = self._known_ids()
        return [
            p
            for p in _cgroup_dirs(self.namespace)
            if p not in self._cgroups_before and p.name in ids
        ]

    def _shim_sockets(self) -> set[str]:
        try:
            return {e.path for e in os.scandir(SHIM_SOCKET_DIR)}
        except OSError:
            return set()

    def shim_socket_path(self, container_id: str, namespace: str | None = None) -> str:
        """Where containerd 1.6's shims put their socket: sha256 of `<address>/<ns>/<id>`."""
        key = f"{self.address}/{namespace or self.namespace}/{container_id}"
        return str(SHIM_SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest())

    def _our_shim_sockets(self) -> list[str]:
        """Sockets named after a task of ours, and those that appeared since start unless another
        daemon's shim listens on them."""
        present = self._shim_sockets()
        ours = {
            self.shim_socket_path(cid, ns) for ns in self._namespaces() for cid in self._known_ids()
        } & present
        new = present - self._sockets_before - ours
        if new:
            listeners = _unix_listeners()
            owners = _socket_owners({listeners[s] for s in new if s in listeners})
            for sock in new:
                pids = owners.get(listeners.get(sock, -1), set())
                if not pids or any(self._mentions_us(pid) for pid in pids):
                    ours.add(sock)
        return sorted(ours)

    def _mentions_us(self, pid: int) -> bool:
        marker = str(self.base).encode() + b"/"
        return any(
            marker in _read_bytes(Path(f"/proc/{pid}/{name}")) for name in ("cmdline", "environ")
        )

    def _our_mounts(self) -> list[MountEntry]:
        return [
            m
            for m in read_mounts()
            if _is_below(m.mount_point, self.root) or _is_below(m.mount_point, self.state)
        ]

    def shim_processes(self, runtime_binary: ShimBinaries = PYRUNC_SHIM) -> list[int]:
        """The pids of the shims of `runtime_binary` serving this daemon."""
        return [p.pid for p in self._shim_processes(_binaries(runtime_binary))]

    def _shim_processes(self, binaries: tuple[str, ...]) -> list[_Process]:
        skip = {os.getpid(), os.getppid()}
        names = [n for b in binaries for n in (b, *SHIM_ALIASES.get(b, ()))]
        found = []
        for pid in _pids():
            if pid in skip:
                continue
            raw = _read_bytes(Path(f"/proc/{pid}/cmdline"))
            if not raw:
                continue
            argv = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
            cmdline = " ".join(argv)
            # The shim binary itself, an interpreter running it as a script or as a module (the
            # pyrunc daemon re-executes itself as `python -m pyrunc.shim`), or anything started
            # the way containerd starts a shim for this daemon, whatever it is called.
            named = any(name in cmdline for name in names)
            serves_us = "-id" in argv and f"-address {self.address}" in cmdline
            if (named or serves_us) and self._mentions_us(pid):
                found.append(_Process(pid, argv))
        return found

    def _metadata_leftovers(self) -> list[str]:
        if not self.running():
            return []
        found = []
        try:
            found += [f"task {t.id} ({t.status}, pid {t.pid})" for t in self.tasks()]
            found += [f"container {c}" for c in self.containers()]
        except (CtrError, subprocess.TimeoutExpired) as e:
            found.append(f"ctr failed while listing tasks and containers: {e}")
        return found

    def leftovers(
        self, runtime_binary: ShimBinaries = PYRUNC_SHIM, *, metadata: bool = True
    ) -> list[str]:
        """What tests left behind, one line each; empty when all is clean.

        Looks for shim processes of `runtime_binary` (a name or several) serving this daemon, mounts
        below its root and state dirs, task bundles and work dirs, runc state of its containers,
        their cgroups, shim sockets that appeared in /run/containerd/s since it started and, with
        `metadata`, tasks and containers containerd still knows about (of `self.namespace`).
        """
        found = [p.describe() for p in self._shim_processes(_binaries(runtime_binary))]
        found += [f"runc state {p}" for p in self._owned_runc_state_dirs()]
        cgroups: dict[str, list[Path]] = {}
        for path in self._owned_cgroups():
            cgroups.setdefault(f"/{path.parent.name}/{path.name}", []).append(path)
        found += [
            f"cgroup {name} in {len(paths)} hierarchies (pids {_cgroup_pids(paths[0])})"
            for name, paths in cgroups.items()
        ]
        found += [f"mount {m.fstype} {m.source} on {m.mount_point}" for m in self._our_mounts()]
        found += [
            ("task bundle " if _is_below(str(p), self.state) else "task work dir ") + str(p)
            for p in self._task_dirs()
        ]
        found += [f"shim socket {s}" for s in self._our_shim_sockets()]
        if metadata:
            found += self._metadata_leftovers()
        return found

    def wait_no_leftovers(
        self, runtime_binary: ShimBinaries = PYRUNC_SHIM, timeout: float = 10.0
    ) -> list[str]:
        """Poll `leftovers()` until it is empty or `timeout` passes; return the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.leftovers(runtime_binary)
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def cleanup_leftovers(self, runtime_binary: ShimBinaries = PYRUNC_SHIM) -> list[str]:
        """Remove everything `leftovers()` reports, by force if need be; return what it found.

        First the polite way through containerd (kill and delete tasks, remove containers), then
        `runc delete --force`, killing shims, lazy unmounts and removing dirs and sockets.
        """
        found = self.leftovers(runtime_binary)
        if not found:
            return found
        if self.running():
            self._cleanup_through_containerd()
        for path in self._owned_runc_state_dirs():
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    ["runc", "--root", str(path.parent), "delete", "--force", path.name],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                )
            shutil.rmtree(path, ignore_errors=True)
        shims = self._shim_processes(_binaries(runtime_binary))
        for proc in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        _wait_gone((p.pid for p in shims), 10)
        for cgroup in self._owned_cgroups():
            self._remove_cgroup(cgroup)
        self._unmount(m.mount_point for m in self._our_mounts())
        sockets = self._our_shim_sockets()  # before the task dirs, which name some of them
        for path in self._task_dirs():
            shutil.rmtree(path, ignore_errors=True)
        for sock in sockets:
            with contextlib.suppress(OSError):
                os.unlink(sock)
        return found

    def _cleanup_through_containerd(self) -> None:
        with contextlib.suppress(CtrError, subprocess.TimeoutExpired):
            for task in self.tasks():
                # --force kills the task (SIGKILL) and waits for it before deleting it.
                self.ctr("tasks", "delete", "--force", task.id, check=False, timeout=30)
            for cid in self.containers():
                self.ctr("containers", "delete", cid, check=False, timeout=20)

    @staticmethod
    def _unmount(mount_points: Iterable[str]) -> None:
        # Deepest first, so a mount below another one goes before its parent.
        for point in sorted(set(mount_points), key=lambda p: p.count("/"), reverse=True):
            subprocess.run(
                ["umount", "-l", point], stdin=subprocess.DEVNULL, capture_output=True, timeout=30
            )

    @staticmethod
    def _remove_cgroup(path: Path) -> None:
        freezer = path / "freezer.state"
        if freezer.exists():
            with contextlib.suppress(OSError):
                freezer.write_text("THAWED")
        for child in path.iterdir():
            if child.is_dir():
                Containerd._remove_cgroup(child)
        deadline = time.monotonic() + 5
        while True:
            for pid in _cgroup_pids(path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
