"""Mounting a container's rootfs into its bundle, and taking it down again (framework).

containerd hands the shim its rootfs as a list of mounts (`type`, `source`, `options`), to be
mounted in order on `<bundle>/rootfs` (an overlay of snapshots, or a bind mount). Options are the
mount(8) words: the ones that are flags become mount flags, the rest the filesystem's data string,
as containerd's own mount package does. Parsing is pure; only mount_all/unmount_all touch the
system (through libc, so that no helper process is needed).
"""

from __future__ import annotations

import errno

from pyrunc.shim.paths import join, normpath  # os.path.normpath without os: `delete` imports this

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

__all__ = ["Mount", "MountError", "check", "from_protos", "mount_all", "mount_rootfs",
           "unmount_all", "unmount_rootfs"]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# option -> (clear?, flag). Words not listed here go to the filesystem as data.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
}
# A bind mount ignores these on the first call: they need a second, remounting call.
_BIND_REMOUNT_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME


class MountError(Exception):
    """A mount refused by check(), or a mount(2)/umount2(2) that failed, in Go's words."""


class Mount:
    """One rootfs mount as containerd sends it. (A plain class: `delete` imports this module and
    must not pay for dataclasses.)"""

    __slots__ = ("options", "source", "type")

    def __init__(self, type: str, source: str, options: tuple[str, ...] = ()) -> None:
        self.type = type
        self.source = source
        self.options = tuple(options)

    def __repr__(self) -> str:
        return f"Mount({self.type!r}, {self.source!r}, {self.options!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mount) and (self.type, self.source, self.options) == (
            other.type, other.source, other.options)

    def __hash__(self) -> int:
        return hash((self.type, self.source, self.options))


class MountPlan:
    """What mount(2) calls one Mount turns into."""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, flags: int, propagation: int, data: str) -> None:
        self.flags = flags
        self.propagation = propagation
        self.data = data

    @property
    def needs_bind_remount(self) -> bool:
        return bool(self.flags & MS_BIND) and bool(self.flags & _BIND_REMOUNT_FLAGS)


def parse_options(options: Iterable[str]) -> MountPlan:
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return MountPlan(flags, propagation, ",".join(data))


_libc: Any = None


def _lib() -> Any:
    """libc, loaded on first use: reading mountinfo needs no ctypes, so `delete` on an
    already-clean bundle never pays for it."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return _libc


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    import ctypes

    rc = _lib().mount(
        source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        from pyrunc.shim.errors import quote, strerror

        err = ctypes.get_errno()
        raise MountError(
            f"mount {fstype} {source} on {target} (data {quote(data)}): {strerror(err)}"
        )


def _umount(target: str, flags: int = 0) -> int:
    """umount2; returns 0 or the errno."""
    import ctypes

    if _lib().umount2(target.encode(), ctypes.c_int(flags)) != 0:
        return ctypes.get_errno()
    return 0


def mount(m: Mount, target: str) -> None:
    plan = parse_options(m.options)
    fstype = m.type
    if plan.flags & MS_BIND:
        fstype = "none" if m.type in ("", "bind", "rbind") else m.type
    flags = plan.flags & ~(MS_RDONLY if plan.needs_bind_remount else 0)
    _mount(m.source, target, fstype, flags, plan.data)
    if plan.propagation:
        _mount("", target, "", plan.propagation, "")
    if plan.needs_bind_remount:
        _mount("", target, "", plan.flags | MS_REMOUNT, "")


# Filesystem types are plain names; a '/' (a FUSE helper path, say) or anything else is refused.
_FSTYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
# Overlay options that name directories: each must be an absolute path that stays put.
_PATH_OPTIONS = ("lowerdir=", "upperdir=", "workdir=")


def check(m: Mount) -> None:
    """Refuse a mount that could reach outside what containerd prepared for this container.

    Every mount lands on the bundle's rootfs, whatever it asks; the checks are on what it
    mounts from: the type, the source of a bind mount and overlay's directories must be plain,
    absolute and free of '..', and mount-helper options (X-containerd.*, x-*) are not run.
    """
    fstype = m.type or "none"
    if len(fstype) > 32 or not fstype[0].isalnum() or not set(fstype) <= _FSTYPE_CHARS:
        raise MountError(f"refusing mount of type {_quote(m.type)}")
    plan = parse_options(m.options)
    if plan.flags & MS_BIND or m.type in ("bind", "rbind"):
        _check_path("bind source", m.source)
    for option in m.options:
        if option.lower().startswith("x-"):
            raise MountError(
                f"refusing mount option {_quote(option)}: mount helpers are not run")
        for prefix in _PATH_OPTIONS:
            if option.startswith(prefix):
                for path in option[len(prefix):].split(":"):
                    _check_path(prefix.rstrip("="), path)


def _check_path(what: str, path: str) -> None:
    if not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        raise MountError(f"refusing mount: {what} {_quote(path)} is not a plain absolute path")


def _quote(text: str) -> str:
    from pyrunc.shim.errors import quote  # only for a refusal: `delete` imports this module

    return quote(text)


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Check every mount, then mount each in order on target; on failure, take down what was
    mounted, then raise."""
    for m in mounts:
        check(m)
    for i, m in enumerate(mounts):
        try:
            mount(m, target)
        except MountError:
            if i:
                unmount_all(target)
            raise


def mount_points_below(path: str, mountinfo: str) -> list[str]:
    """Mount points at or below path, from /proc/self/mountinfo text, deepest and latest first."""
    path = normpath(path)
    found: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == path or point.startswith(path + "/"):
            found.append(point)
    # Later lines were mounted later: reversing unmounts stacked mounts top first; a stable sort
    # by depth then puts children before their parents.
    found.reverse()
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return found


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal \ooo
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def unmount_all(path: str) -> None:
    """Unmount everything mounted at or below path (stacked mounts too). Idempotent."""
    for _ in range(64):  # bounded: stacked mounts of one point come off one per pass
        try:
            with open("/proc/self/mountinfo") as f:
                points = mount_points_below(path, f.read())
        except OSError as e:
            from pyrunc.shim.errors import describe

            raise MountError(describe(e, "open", "/proc/self/mountinfo")) from e
        if not points:
            return
        for point in points:
            err = _umount(point)
            if err in (errno.EBUSY,):
                err = _umount(point, MNT_DETACH)
            if err not in (0, errno.EINVAL, errno.ENOENT):
                from pyrunc.shim.errors import strerror

                raise MountError(f"unmount {point}: {strerror(err)}")
    raise MountError(f"unmount {path}: mounts keep reappearing")


def mount_rootfs(mounts: Sequence[Mount], bundle: str) -> str:
    """Mount containerd's rootfs mounts on `<bundle>/rootfs` (made if missing) and return that
    path; "" when there are none (the bundle's rootfs is already in place, as with
    `ctr run --rootfs`). On failure nothing stays mounted."""
    if not mounts:
        return ""
    for m in mounts:
        check(m)
    import os

    target = join(bundle, "rootfs")
    try:
        os.mkdir(target, 0o711)
    except FileExistsError:
        pass
    except OSError as e:
        from pyrunc.shim.errors import describe

        raise MountError(describe(e, "mkdir", target)) from e
    mount_all(mounts, target)
    return target


def unmount_rootfs(bundle: str) -> None:
    """Take down whatever is mounted on `<bundle>/rootfs`, if anything. Idempotent."""
    unmount_all(join(bundle, "rootfs"))


def from_protos(mounts: Iterable[Any]) -> list[Mount]:
    """Mounts from containerd.types.Mount messages (CreateTaskRequest.rootfs)."""
    return [Mount(m.type, m.source, tuple(m.options)) for m in mounts]
