"""The cgroup v2 lane: run the integration tests in a Debian 12 guest with systemd as PID 1.

    python3 tests/guest/run_guest.py [--source worktree|HEAD] [--timeout MIN] [--run-dir DIR]
                                     [--patch FILE] [-- PYTEST ARGS]

(`make test-cgroup2` runs it; root only, standard library only.) This machine is cgroup v1
(hybrid) without systemd, so pyrunc's cgroup v2 paths and runc's systemd driver are exercised in
a virtual machine:

1. The guest image: built once into .cache/cgroup2-guest-<key>/ by build_image.sh, where the key
   hashes what goes into it (the package list, setup.cfg for pyrunc's dependencies, the build
   script and the lane's unit); a change to any of them builds a new one, and older ones are
   removed.
2. The work disk, made afresh for each run: the project's files (`--source worktree`, the
   default: the files git tracks plus untracked ones it does not ignore, as they are in the
   working tree; `--source HEAD`: the last commit, via `git archive`; on CI's fresh clone the two
   are the same), pyrunc's wheel built from them, and the pytest runs (default_runs below, less
   the tests in deselect.txt). `--patch` changes the guest's copy only.
3. qemu boots the guest's own kernel in software emulation (KVM does not run a guest kernel on
   this machine), root image as a snapshot (never changed), work disk read-write, no network.
   The unit pyrunc-lane.service runs guest_run.sh, which installs the wheel into the image's
   virtual environment and runs the pytest runs, then the guest powers itself off. A run still
   going near the end of --timeout is interrupted in the guest, so its report still comes back.
4. The results, read back from the work disk with debugfs: each run's pytest output is printed
   here, and the lane fails if any run failed, so the failing tests are named in this output.

The guest's console (boot, then pytest's output as it runs) is kept as console.log in the run
directory; a line a minute here says where the guest is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache"
DEFAULT_RUN_DIR = CACHE / "cgroup2-run"
# What the image is made of: a change to any of these files builds a new image.
IMAGE_INPUTS = [HERE / "packages.txt", HERE / "build_image.sh", HERE / "pyrunc-lane.service",
                REPO / "setup.cfg"]
HOST_PYTHON = REPO / ".venv" / "bin" / "python"  # Debian's python3.11, as the guest's
DEFAULT_TIMEOUT_MIN = 40.0
WORK_DISK_SIZE = "1G"
HEARTBEAT_S = 60.0
# The guest interrupts its pytest runs this long before the host would stop it, so that a run
# that hangs still ends with pytest's own report (the guest's clock starts a little later).
GUEST_MARGIN_S = 120.0
TIMEOUT_EXIT = 124  # timeout(1)'s exit status when it stopped the command


@dataclass
class Run:
    """One pytest run in the guest: its name, environment and arguments."""

    name: str
    env: dict[str, str]
    args: list[str]
    why: str = ""
    deselected: int = 0  # of deselect.txt's entries, passed as --deselect

    def describe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        args, skip = [], False
        for arg in self.args:  # the --deselect pairs are summed up, not listed
            if skip or arg == "--deselect":
                skip = not skip
                continue
            args.append(arg)
        text = f"{env} pytest {' '.join(args)}"
        if self.deselected:
            text += f" (and {self.deselected} --deselect of tests/guest/deselect.txt)"
        return text + (f": {self.why}" if self.why else "")


def read_deselected(path: Path = HERE / "deselect.txt") -> list[str]:
    """deselect.txt: node ids (or prefixes) the guest does not run; comments say why."""
    return [node_id for line in path.read_text().splitlines()
            if (node_id := line.split("#", 1)[0].strip())]


def default_runs(deselected: list[str], pytest_args: list[str]) -> list[Run]:
    # PYRUNC_TEST_CGROUP2=1 tells tests/integration/cgroup2_lane.py that this is the lane: its
    # tests must run here (and fail the run if the platform is not cgroup v2 with systemd).
    lane = {"PYRUNC_TEST_CGROUP2": "1"}
    if pytest_args:
        return [Run("main", lane, pytest_args, "as asked")]
    deselect = [arg for node_id in deselected for arg in ("--deselect", node_id)]
    return [
        Run("main", lane, ["-v", "tests/integration", *deselect],
            "the integration suite: pyrunc and the Go shim on cgroup v2, systemd as PID 1",
            len(deselected)),
        # ctr sends runc.v1 Options (--runc-systemd-cgroup) only to io.containerd.runc.v2: with
        # pyrunc installed under that name, its Options path is the one under test.
        Run("drop-in", {**lane, "PYRUNC_TEST_DROP_IN": "1"},
            ["-v", "tests/integration/test_cgroup2.py"],
            "the cgroup v2 tests with pyrunc as containerd-shim-runc-v2"),
    ]


# --- the image --------------------------------------------------------------------------------


def image_key() -> str:
    digest = hashlib.sha256()
    for path in IMAGE_INPUTS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_image() -> tuple[Path, float | None]:
    """The image's directory, built if need be; and the build's duration (None if cached)."""
    image = CACHE / f"cgroup2-guest-{image_key()}"
    if (image / "rootfs.img").exists():
        return image, None
    CACHE.mkdir(exist_ok=True)
    started = time.monotonic()
    subprocess.run([str(HERE / "build_image.sh"), str(image)], check=True, cwd=REPO)
    took = time.monotonic() - started
    for old in CACHE.glob("cgroup2-guest-*"):
        if old != image:
            shutil.rmtree(old, ignore_errors=True)
    return image, took


# --- the work disk ----------------------------------------------------------------------------


def project_files(source: str) -> list[str]:
    """Paths (relative to the repository) of the project's files for the guest."""
    if source == "HEAD":
        out = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", "HEAD"], cwd=REPO,
                             check=True, capture_output=True).stdout
    else:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, check=True,
                             capture_output=True).stdout
    return [name.decode() for name in out.split(b"\0") if name]


def copy_project(source: str, dest: Path) -> int:
    dest.mkdir(parents=True)
    if source == "HEAD":
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return len(project_files(source))
    count = 0
    for name in project_files(source):
        src = REPO / name
        if not src.exists() and not src.is_symlink():  # deleted, not yet staged
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        count += 1
    return count


def make_work_disk(run_dir: Path, runs: list[Run], source: str, patch: Path | None,
                   deadline: float) -> Path:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tree = run_dir / "work"
    files = copy_project(source, tree / "src")
    if patch is not None:
        # Only the guest's copy changes: the working tree (which others may be using) does not.
        subprocess.run(["patch", "-p1", "-d", str(tree / "src"), "-i", str(patch.resolve())],
                       check=True)
    # pyrunc's wheel, built here from the same copy: setuptools is slow under emulation, and
    # the guest then only unpacks it (pip install of the wheel: the same non-editable install).
    subprocess.run([str(HOST_PYTHON), "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--wheel-dir", str(tree / "wheel"), str(tree / "src")],
                   check=True)
    shutil.rmtree(tree / "src" / "build", ignore_errors=True)
    for egg_info in (tree / "src").glob("*.egg-info"):
        shutil.rmtree(egg_info)
    (tree / "results").mkdir()
    runs_dir = tree / "runs"
    runs_dir.mkdir()
    # One file per run and per list, one item a line: nothing in them needs shell quoting.
    (runs_dir / "order").write_text("".join(f"{run.name}\n" for run in runs))
    (runs_dir / "deadline").write_text(f"{deadline:.0f}\n")  # seconds of the guest's uptime
    for run in runs:
        (runs_dir / f"{run.name}.env").write_text(
            "".join(f"{k}={v}\n" for k, v in run.env.items()))
        (runs_dir / f"{run.name}.args").write_text("".join(f"{a}\n" for a in run.args))
    disk = run_dir / "work.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "pyrunc-work", "-d", str(tree), "-F",
                    str(disk), WORK_DISK_SIZE], check=True, capture_output=True)
    print(f"== cgroup v2 lane: work disk with {files} project files ({source})", flush=True)
    return disk


# --- the guest --------------------------------------------------------------------------------


def qemu_command(image: Path, work_disk: Path) -> list[str]:
    return [
        "qemu-system-x86_64",
        # KVM is there but does not run a guest kernel on this machine (environment.md).
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "3G",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 quiet",
        # The root image stays as built: the guest's writes go to a temporary overlay.
        "-drive", f"file={image / 'rootfs.img'},format=raw,if=virtio,snapshot=on",
        "-drive", f"file={work_disk},format=raw,if=virtio",
        "-device", "virtio-rng-pci",  # entropy for an early getrandom() without waiting
        "-nic", "none",  # the guest has everything it needs; no network, no surprises
        "-nographic", "-no-reboot",
    ]


def last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    # The console has the terminal's escape sequences and the journal's prefixes: drop them.
    line = re.sub(r"\x1b(\[[0-9;?]*[a-zA-Z]|c)", "", lines[-1]) if lines else ""
    return re.sub(r"^\[ *[0-9.]+\] \S+: ", "", line.strip())[:150]


def boot(run_dir: Path, image: Path, work_disk: Path, timeout: float) -> tuple[int | None, float]:
    """Run the guest to its power-off; (qemu's exit code or None on timeout, seconds)."""
    console = run_dir / "console.log"
    started = time.monotonic()
    with console.open("wb") as log:
        qemu = subprocess.Popen(qemu_command(image, work_disk), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_S):
            minutes = (time.monotonic() - started) / 60
            print(f"   guest, {minutes:4.1f} min: {last_line(console)}", flush=True)

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        code: int | None = qemu.wait(timeout)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
        code = None
    finally:
        done.set()
    return code, time.monotonic() - started


def read_results(run_dir: Path, work_disk: Path) -> Path:
    """Copy the work disk's results/ out (debugfs reads ext4 without mounting it)."""
    out = run_dir / "results"  # rdump makes it, and refuses to if it exists
    subprocess.run(["debugfs", "-R", f"rdump /results {run_dir}", str(work_disk)],
                   check=True, capture_output=True)
    return out


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def console_tail(run_dir: Path, lines: int = 60) -> str:
    text = (run_dir / "console.log").read_bytes().decode(errors="replace")
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("worktree", "HEAD"), default="worktree",
                        help="the project's files for the guest (default: the working tree)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_MIN,
                        help=f"minutes the guest may run (default {DEFAULT_TIMEOUT_MIN:.0f})")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="where the work disk, console log and results go (default "
                             f"{DEFAULT_RUN_DIR.relative_to(REPO)}; emptied first)")
    parser.add_argument("--patch", type=Path,
                        help="a patch (git diff) to apply to the guest's copy of the project, "
                             "e.g. a deliberate bug, to see that the lane catches it")
    parser.add_argument("pytest_args", nargs="*",
                        help="after --: one pytest run with these arguments instead of the lane's")
    opts = parser.parse_args()

    deselected = read_deselected()
    runs = default_runs(deselected, opts.pytest_args)
    image, build_s = ensure_image()
    print(f"== cgroup v2 lane: image {image.relative_to(REPO)} "
          + (f"built in {build_s:.0f} s" if build_s is not None else "(cached)"), flush=True)
    work_disk = make_work_disk(opts.run_dir, runs, opts.source, opts.patch,
                               opts.timeout * 60 - GUEST_MARGIN_S)
    for run in runs:
        print(f"   run {run.name}: {run.describe()}", flush=True)
    print(f"== cgroup v2 lane: booting the guest (console: {opts.run_dir / 'console.log'})",
          flush=True)
    code, guest_s = boot(opts.run_dir, image, work_disk, opts.timeout * 60)
    if code is None:
        print(f"== cgroup v2 lane: FAILED: the guest did not finish within {opts.timeout:.0f} "
              f"min; its console's last lines:\n{console_tail(opts.run_dir)}")
        return 1
    results = read_results(opts.run_dir, work_disk)
    failed: list[str] = []
    if read_int(results / "install.rc") != 0:
        install_log = results / "install.log"
        print(install_log.read_text() if install_log.exists() else console_tail(opts.run_dir))
        print("== cgroup v2 lane: FAILED: pyrunc could not be installed in the guest")
        return 1
    summary = []
    for run in runs:
        rc = read_int(results / f"{run.name}.rc")
        seconds = read_int(results / f"{run.name}.seconds")
        log = results / f"{run.name}.log"
        print(f"\n== cgroup v2 lane, run {run.name}: pytest's output in the guest")
        print(log.read_text(errors="replace") if log.exists() else "(no output)")
        if rc != 0:
            failed.append(run.name)
        if rc is None:
            outcome = "did not finish"
        elif rc == TIMEOUT_EXIT:
            outcome = f"interrupted after {seconds} s: the lane's {opts.timeout:.0f} min ran out"
        else:
            outcome = f"exit {rc} in {seconds} s"
        summary.append(f"{run.name}: {outcome}")
    print(f"\n== cgroup v2 lane: guest ran {guest_s:.0f} s (boot to power-off); "
          + "; ".join(summary))
    if failed:
        if any(read_int(results / f"{name}.rc") is None for name in failed):
            print(f"the guest's console's last lines:\n{console_tail(opts.run_dir)}")
        print(f"== cgroup v2 lane: FAILED: {', '.join(failed)}")
        return 1
    print("== cgroup v2 lane: passed")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("the cgroup v2 lane needs root (debootstrap, chroot)")
    sys.exit(main())
