"""Run one container through pyrunc on a private containerd: `python -m tests.support.demo`.

Starts containerd in a temporary directory, builds and imports the busybox test image, runs a short
command with `ctr run --rm`, prints its output and exit code, and leaves nothing behind. Pass
`--runtime io.containerd.runc.v2` to do the same with the Go shim for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.containerd import Containerd, CtrError
from tests.support.image import build_busybox_image
from tests.support.names import IMAGE, PYRUNC_RUNTIME, RUNC_RUNTIME, shim_binary

SCRIPT = "echo hello from pyrunc; uname -a; cat /etc/os-release 2>/dev/null || true; id"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.demo", description=__doc__)
    parser.add_argument(
        "--runtime",
        default=PYRUNC_RUNTIME,
        help=f"containerd runtime to run the container with (default {PYRUNC_RUNTIME}; "
        f"{RUNC_RUNTIME} is the Go shim)",
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds for `ctr run`")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: must run as root (it starts containerd and runc)", file=sys.stderr)
        return 2

    cid = f"demo-{os.getpid()}"
    binary = shim_binary(args.runtime)
    exit_code = 1
    with Containerd(namespace="pyrunc-demo") as ctd, tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        ctd.import_image(build_busybox_image(Path(tmp) / "busybox.tar", IMAGE), IMAGE)
        print(f"containerd {ctd.address}: up, {IMAGE} imported in {time.monotonic() - t0:.2f} s")
        print(f"--- ctr run --rm --runtime {args.runtime} {IMAGE} {cid} sh -c '...' ---")
        try:
            res = ctd.ctr(
                "run",
                "--rm",
                "--runtime",
                args.runtime,
                IMAGE,
                cid,
                "sh",
                "-c",
                SCRIPT,
                timeout=args.timeout,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as e:
            print(f"demo: ctr run failed: {e}", file=sys.stderr)
        else:
            sys.stdout.write(res.stdout.decode(errors="replace"))
            if res.stderr:
                sys.stdout.write(res.stderr.decode(errors="replace"))
            exit_code = res.returncode
            print(f"--- exit code {exit_code} ---")
        if exit_code != 0:
            print(f"--- containerd log (tail) ---\n{ctd.log_tail(20)}", file=sys.stderr)
        # A shim may take a moment to exit after `ctr run --rm`; anything left then is a leak.
        if ctd.wait_no_leftovers(binary, timeout=10):
            try:
                cleaned = ctd.cleanup_leftovers(binary)
            except (CtrError, OSError) as e:
                print(f"demo: cleanup failed: {e}", file=sys.stderr)
                return 1
            print("demo: had to clean up after the container:\n  " + "\n  ".join(cleaned))
            exit_code = exit_code or 1
        still = ctd.leftovers(binary)
        if still:
            print("demo: could not clean up:\n  " + "\n  ".join(still), file=sys.stderr)
            exit_code = exit_code or 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
