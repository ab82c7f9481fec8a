#!/bin/bash
# Build the cgroup v2 lane's Debian 12 guest into OUT_DIR: rootfs.img (ext4), vmlinuz, initrd.img.
#
#   tests/guest/build_image.sh OUT_DIR
#
# run_guest.py calls it when OUT_DIR (named after a hash of the package list, setup.cfg and the
# files of this directory that go into the image) does not exist yet. The steps, as checked by
# hand in ../shared/docs/environment.md:
#   1. debootstrap a minbase bookworm with tests/guest/packages.txt, from the mirror of the
#      system's apt sources (tests/support/apt_mirror.py);
#   2. configure it for an unattended run: fstab, the lane's unit, masks;
#   3. a virtual environment made by the guest's own /usr/bin/python3 (chroot) at
#      /opt/pyrunc-venv, with pyrunc's dependencies (and '.[dev]') installed offline from wheels
#      built here on the host: the guest has no network;
#   4. pack the tree into an ext4 image with mke2fs -d (no loop mount).
# Root only (debootstrap, chroot). Runs from the repository's top directory.
set -euo pipefail

out=${1:?usage: build_image.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
host_python=${HOST_PYTHON:-$repo/.venv/bin/python}  # a venv of Debian's python3.11, as the guest's
suite=bookworm
image_size=3G
venv=/opt/pyrunc-venv

work="$out.tmp"
root="$work/root"
rm -rf "$work"
mkdir -p "$work"
start=$SECONDS
step() { echo "== guest image: $* ($((SECONDS - start)) s)"; }

mirror=$(/usr/bin/python3 "$repo/tests/support/apt_mirror.py")
packages=$(grep -v -e '^#' -e '^$' "$here/packages.txt" | paste -sd, -)
step "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
  > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }

step "configure"
# Root is opened read-write but as a qemu snapshot (discarded at exit), so no fsck is needed;
# /dev/vdb is the per-run work disk (the project, and where the results go).
cat > "$root/etc/fstab" <<'EOF'
/dev/vda / ext4 rw 0 0
/dev/vdb /srv/pyrunc ext4 rw 0 0
EOF
mkdir -p "$root/srv/pyrunc"
echo pyrunc-guest > "$root/etc/hostname"
systemd_dir="$root/etc/systemd/system"
install -m 0644 "$here/pyrunc-lane.service" "$systemd_dir/pyrunc-lane.service"
mkdir -p "$systemd_dir/multi-user.target.wants"
ln -sf /etc/systemd/system/pyrunc-lane.service "$systemd_dir/multi-user.target.wants/"
# The packaged containerd would hold /run/containerd/containerd.sock (the tests start their own);
# a getty on the serial console hangs up the console the lane's unit writes to; the timers
# would only spend emulated CPU time.
for unit in containerd.service serial-getty@ttyS0.service apt-daily.timer \
            apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$systemd_dir/$unit"
done

step "wheels of pyrunc's dependencies (host)"
wheels="$root/opt/pyrunc-wheels"
# setuptools and wheel too: the guest installs pyrunc itself with --no-build-isolation.
(cd "$repo" && "$host_python" -m pip wheel -q --wheel-dir "$wheels" '.[dev]' setuptools wheel) \
  > "$work/wheels.log" 2>&1 || { tail -30 "$work/wheels.log"; exit 1; }

step "virtual environment $venv (guest's python, chroot)"
# A clean environment: the host's PIP_* settings name host paths.
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$root" "$@"; }
in_root /usr/bin/python3 -m venv "$venv"
in_root "$venv/bin/python" -m pip install -q --no-index --no-cache-dir \
  --find-links /opt/pyrunc-wheels 'pyrunc[dev]' setuptools wheel
# pyrunc itself is installed again at boot from the work disk's copy of the project.
in_root "$venv/bin/python" -m pip uninstall -q -y pyrunc
rm -rf "$wheels" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

step "kernel and initrd"
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"

step "pack $image_size ext4 image"
mke2fs -q -t ext4 -L pyrunc-guest -d "$root" -F "$work/rootfs.img" "$image_size"
rm -rf "$root"
rm -rf "$out"
mv "$work" "$out"
step "done: $out"
