"""Regenerate every *_pb2.py in this folder from the .proto files next to it.

Usage: python protos/generate.py [--check]

protoc derives a module's Python import path from the path its .proto was
given under. The .proto files therefore import each other as
"pyrunc/protos/<name>.proto", and protoc runs with a temporary include root in
which pyrunc/protos is a symlink to this folder, so the generated modules
import each other as `from pyrunc.protos import <name>_pb2`, which is how the
folder is installed. --check generates into a temporary directory and fails,
listing the files, when the committed modules differ from a fresh generation.

Each module is protoc's, wrapped (see `wrap`): with upb, protos/_lean.py builds the same classes
without importing protobuf's Python layer; otherwise protoc's code runs, indented under `else:`
and with its serialized file moved into a constant. The well-known types the .proto files
import get a module here too (any_pb2, ...), which _lean fills from protobuf's own serialized
file, or which imports protobuf's module.
"""

from __future__ import annotations

import argparse
import ast
import importlib
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
    modules: dict[str, bytes] = {}
    well_known: set[str] = set()
    for path in sorted((py_out / PACKAGE_PATH).glob("*_pb2.py")):
        text, imported = wrap(path.read_text(encoding="utf-8"))
        modules[path.name] = text.encode()
        well_known |= imported
    for name in sorted(well_known):
        modules[f"{name}.py"] = well_known_module(name).encode()
    return modules


DOCSTRING = '"""Generated protocol buffer code."""\n'
NOTE = """\
# protos/generate.py wrapped protoc's code: with upb, _lean.build makes the same classes
# without importing protobuf's Python layer (see protos/_lean.py); else protoc's code runs.
from pyrunc.protos import _lean

_SERIALIZED = {serialized}

if _lean.ACTIVE:
{imports}  _lean.build(globals(), _SERIALIZED, {module_name!r})
else:
{protoc}
del _SERIALIZED
"""


def wrap(text: str) -> tuple[str, set[str]]:
    """protoc's module -> (the module written here, the well-known modules it imports).

    The serialized file becomes one constant that both branches use; the lean branch imports
    the same dependencies as protoc's code, the well-known ones from this package."""
    tree = ast.parse(text)
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, []).append(node)
    add_file = calls.get("AddSerializedFile", [])
    build = calls.get("BuildTopDescriptorsAndMessages", [])
    if len(add_file) != 1 or len(build) != 1 or text.count(DOCSTRING) != 1:
        raise SystemExit(f"protoc's output is not as protos/generate.py expects:\n{text}")
    literal = ast.get_source_segment(text, add_file[0].args[0]) or ""
    module_name = ast.literal_eval(build[0].args[1])
    if not literal.startswith("b'") or text.count(literal) != 1:
        raise SystemExit(f"{module_name}: the serialized file is not one bytes literal")

    imports, well_known = [], set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.names[0].name.endswith("_pb2"):
            (alias,) = node.names
            if node.module == "google.protobuf":
                well_known.add(alias.name)
            elif node.module != "pyrunc.protos":
                raise SystemExit(f"{module_name}: cannot import {node.module}.{alias.name}")
            imports.append(f"  from pyrunc.protos import {alias.name} as {alias.asname}\n")

    head, body = text.split(DOCSTRING, 1)
    body = body.replace(literal, "_SERIALIZED")
    protoc = "\n".join(f"  {line}" if line else "" for line in body.splitlines())
    wrapped = head + DOCSTRING + NOTE.format(
        serialized=literal, imports="".join(imports), module_name=module_name, protoc=protoc
    )
    return wrapped, well_known


def well_known_module(name: str) -> str:
    """The module here for google.protobuf.<name>: lean, else protobuf's own names."""
    module = importlib.import_module(f"google.protobuf.{name}")
    names = ", ".join(n for n in vars(module) if not n.startswith("_"))
    return (
        "# -*- coding: utf-8 -*-\n"
        "# Generated by protos/generate.py.  DO NOT EDIT!\n"
        f"# source: {module.DESCRIPTOR.name}\n"
        f'"""google.protobuf.{name}\'s classes; built by protos/_lean.py when upb is active."""\n'
        "from pyrunc.protos import _lean\n"
        "\n"
        f"if not _lean.build_well_known(globals(), {name!r}):\n"
        f"  from google.protobuf.{name} import {names}\n"
    )


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
