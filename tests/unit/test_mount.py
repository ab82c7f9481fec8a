"""Turning containerd's mount options into mount(2) flags and data; reading mountinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrunc.shim.mount import (
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    Mount,
    MountError,
    check,
    mount_points_below,
    parse_options,
)


def test_overlay_options_are_all_data() -> None:
    plan = parse_options(["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"])
    assert plan.flags == 0
    assert plan.data == "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2"


def test_read_only_bind_needs_a_remount() -> None:
    plan = parse_options(["rbind", "ro"])
    assert plan.flags == MS_BIND | MS_REC | MS_RDONLY
    assert plan.needs_bind_remount
    assert plan.data == ""


def test_plain_bind_needs_no_remount() -> None:
    assert not parse_options(["bind"]).needs_bind_remount


def test_later_words_override_earlier_ones() -> None:
    assert parse_options(["ro", "rw"]).flags & MS_RDONLY == 0
    assert parse_options(["nosuid", "suid", "nodev"]).flags == MS_NODEV
    assert parse_options(["suid", "nosuid"]).flags == MS_NOSUID


def test_propagation_is_kept_apart() -> None:
    plan = parse_options(["bind", "rprivate"])
    assert plan.propagation == MS_PRIVATE | MS_REC
    assert plan.flags == MS_BIND


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
100 22 0:50 / /b/rootfs rw,relatime - overlay overlay rw,lowerdir=/l
101 100 0:51 / /b/rootfs/proc rw - proc proc rw
102 22 0:52 / /b/rootfs2 rw - tmpfs tmpfs rw
103 100 0:53 / /b/rootfs rw - tmpfs tmpfs rw
104 22 0:54 / /b/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_below_are_deepest_and_latest_first() -> None:
    assert mount_points_below("/b/rootfs", MOUNTINFO) == [
        "/b/rootfs/proc", "/b/rootfs", "/b/rootfs",
    ]


def test_a_sibling_with_a_common_prefix_is_not_below() -> None:
    assert "/b/rootfs2" not in mount_points_below("/b/rootfs", MOUNTINFO)


def test_escaped_mount_points_are_unescaped() -> None:
    assert mount_points_below("/b/with space", MOUNTINFO) == ["/b/with space"]







@pytest.mark.parametrize("mount", [
    Mount("overlay", "overlay", ("lowerdir=/var/lib/a:/var/lib/b", "upperdir=/u", "workdir=/w")),
    Mount("bind", "/var/lib/snapshots/1/fs", ("rbind", "ro")),
    Mount("tmpfs", "tmpfs", ("size=64m",)),
])
def test_mounts_containerd_makes_are_accepted(mount: Mount) -> None:
    check(mount)


@pytest.mark.parametrize("mount", [
    Mount("fuse./usr/bin/helper", "x"),
    Mount("overlay", "overlay", ("lowerdir=/var/lib/a:../../etc", "upperdir=/u", "workdir=/w")),
    Mount("overlay", "overlay", ("lowerdir=relative", "upperdir=/u", "workdir=/w")),
    Mount("bind", "etc", ("rbind",)),
    Mount("none", "/var/lib/../../etc", ("bind",)),
    Mount("overlay", "overlay", ("X-containerd.mkdir.path=/etc/evil",)),
    Mount("ext4", "/dev/vda", ("x-systemd.automount",)),
])
def test_mounts_that_could_reach_outside_are_refused(mount: Mount) -> None:
    with pytest.raises(MountError, match="refusing"):
        check(mount)


def test_mount_rootfs_binds_on_the_bundles_rootfs_and_unmount_rootfs_takes_it_down(
        tmp_path: Path) -> None:
    from pyrunc.protos import mount_pb2
    from pyrunc.shim.mount import from_protos, mount_rootfs, unmount_rootfs

    source = tmp_path / "snapshot"
    source.mkdir()
    (source / "hello.wasm").write_bytes(b"\0asm")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    mounts = from_protos([mount_pb2.Mount(type="bind", source=str(source),
                                          options=["rbind", "ro"])])
    assert mounts == [Mount("bind", str(source), ("rbind", "ro"))]
    assert mount_rootfs([], str(bundle)) == ""  # `ctr run --rootfs`: nothing to mount
    target = mount_rootfs(mounts, str(bundle))
    try:
        assert target == f"{bundle}/rootfs"
        assert (bundle / "rootfs" / "hello.wasm").read_bytes() == b"\0asm"
    finally:
        unmount_rootfs(str(bundle))
    assert list((bundle / "rootfs").iterdir()) == []
    unmount_rootfs(str(bundle))  # idempotent


def test_mount_rootfs_refuses_before_mounting_anything(tmp_path: Path) -> None:
    from pyrunc.shim.mount import mount_rootfs

    good = Mount("bind", str(tmp_path), ("rbind",))
    with pytest.raises(MountError, match="refusing"):
        mount_rootfs([good, Mount("bind", "../etc", ("rbind",))], str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()
