"""Regenerate every *_pb2.py in this folder from the .proto files next to it.

Usage: python protos/generate.py [--check]

protoc derives a module's Python import path from the path its .proto was
given under. The .proto files therefore import each other as
"pyrunc/protos/<name>.proto", and protoc runs with a temporary include root in
which pyrunc/protos is a symlink to this folder, so the generated modules
import each other as `from pyrunc.protos import <name>_pb2`, which is how the
folder is installed. --check generates into a temporary directory and fails,
listing the files, when the committed modules differ from a fresh generation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PACKAGE_PATH = Path("pyrunc", "protos")


def generate(out_dir: Path) -> dict[str, bytes]:
    """Run protoc on every .proto here; return {module file name: contents}."""
    sources = sorted(p.name for p in HERE.glob("*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files in {HERE}")
    include_root = out_dir / "include"
    (include_root / PACKAGE_PATH).parent.mkdir(parents=True)
    (include_root / PACKAGE_PATH).symlink_to(HERE, target_is_directory=True)
    py_out = out_dir / "out"
    py_out.mkdir()
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"--proto_path={include_root}",
        f"--proto_path={well_known}",
        f"--python_out={py_out}",
        *(str(PACKAGE_PATH / name) for name in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return {p.name: p.read_bytes() for p in sorted((py_out / PACKAGE_PATH).glob("*_pb2.py"))}


def committed() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(HERE.glob("*_pb2.py"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare a fresh generation with the files in place; exit 1 on difference",
    )
    opts = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pyrunc-protos-") as tmp:
        fresh = generate(Path(tmp))
    current = committed()

    missing = sorted(fresh.keys() - current.keys())
    extra = sorted(current.keys() - fresh.keys())
    changed = sorted(n for n in fresh.keys() & current.keys() if fresh[n] != current[n])

    if opts.check:
        problems = (
            [f"missing: {n}" for n in missing]
            + [f"extra: {n}" for n in extra]
            + [f"differs: {n}" for n in changed]
        )
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python protos/generate.py", file=sys.stderr)
            return 1
        return 0

    for name in missing + changed:
        (HERE / name).write_bytes(fresh[name])
        print(f"wrote {name}")
    for name in extra:
        (HERE / name).unlink()
        print(f"removed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
