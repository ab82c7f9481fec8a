"""The packages' import structure, read from the source: oci/ never imports shim/, and the
modules of shim/ import each other without a circle (the lazy imports inside functions count:
they run too, just later; those under `if TYPE_CHECKING:` do not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyrunc.examples
import pyrunc.oci
import pyrunc.shim


def _package_dir(package: object) -> Path:
    return Path(package.__file__ or ".").resolve().parent  # type: ignore[attr-defined]


def _modules(package: str) -> dict[str, Path]:
    """{dotted name: file} of every module of pyrunc.<package>, subpackages included."""
    top = _package_dir({"shim": pyrunc.shim, "oci": pyrunc.oci,
                        "examples": pyrunc.examples}[package])
    found = {}
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(top).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("pyrunc", package, *parts))] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The pyrunc modules a file imports at run time, as dotted names (`from pyrunc.shim import
    log` names pyrunc.shim.log when that is a module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pyrunc."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("pyrunc."):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules) | set(_modules("oci" if package == "shim" else "shim"))
    return {name: imports_of(path, known) & set(modules) - {name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (as a path that comes back to its start), or None.

    A package's __init__ is not counted as importing its submodules' importers back: Python
    runs it first, so `a.b` importing `a` is no circle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if name.startswith(target + "."):
                continue  # a module importing its own package
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_oci_never_imports_shim() -> None:
    modules = _modules("oci")
    known = set(modules) | set(_modules("shim"))
    offenders = {name: sorted(m for m in imports_of(path, known) if m.startswith("pyrunc.shim"))
                 for name, path in modules.items()}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("package", ["shim", "oci"])
def test_no_import_circle(package: str) -> None:
    cycle = find_cycle(_graph(package))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"p.x": {"p"}, "p": set()}) is None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n"
        "    from pyrunc.shim import task\n"
        "def f():\n"
        "    from pyrunc.shim import log\n"
        "    import pyrunc.oci.errors\n"
    )
    known = {"pyrunc.shim.task", "pyrunc.shim.log", "pyrunc.oci.errors"}
    assert imports_of(source, known) == {"pyrunc.shim.log", "pyrunc.oci.errors"}


# The framework: what any shim needs, importing nothing of oci/ and nothing of the runc shim.
# The runc shim (containerd-shim-pyrunc-v1) is built on it like any other shim: runc_shim.py
# (its hooks), task.py (its Task service over oci/), info.py (-info), rehearsal.py (its warm-up)
# and __main__.py (`python -m pyrunc.shim`). Every module is one or the other.
FRAMEWORK = ("api", "address", "cli", "config", "daemon", "errors", "fifo", "launcher", "log",
             "manager", "mount", "names", "paths", "placement", "publisher", "reaper", "spawn",
             "ttrpc", "warm")
RUNC_SHIM = ("__main__", "info", "rehearsal", "runc_shim", "task")


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _part(name: str) -> str:
    return name.removeprefix("pyrunc.shim").lstrip(".").split(".")[0]


def test_every_module_of_shim_is_the_frameworks_or_the_runc_shims() -> None:
    parts = {_part(name) for name in _modules("shim")} - {""}
    assert parts == set(FRAMEWORK) | set(RUNC_SHIM)
    assert not set(FRAMEWORK) & set(RUNC_SHIM)


def test_the_framework_imports_nothing_of_oci_or_the_runc_shim() -> None:
    modules = _modules("shim")
    known = set(modules) | set(_modules("oci"))
    graph = {name: imports_of(path, known) for name, path in modules.items()}
    forbidden = ("pyrunc.oci", *(f"pyrunc.shim.{name}" for name in RUNC_SHIM))
    framework = [name for name in modules if _part(name) in FRAMEWORK or name == "pyrunc.shim"]
    reached = {name: sorted(m for m in _closure(graph, name) if m.startswith(forbidden))
               for name in framework}
    assert {name: found for name, found in reached.items() if found} == {}


# The framework's public modules (docs/writing-a-shim.md): what a shim built on it may import.
PUBLIC = ("api", "cli", "config", "errors", "fifo", "log", "mount", "ttrpc.server", "ttrpc.status")


def test_the_example_shims_use_only_the_frameworks_public_modules_and_the_protos() -> None:
    modules = _modules("examples")
    known = set(modules) | set(_modules("shim")) | set(_modules("oci"))
    allowed = {f"pyrunc.shim.{name}" for name in PUBLIC} | {"pyrunc.shim"}
    used = {name: imports_of(path, known) for name, path in modules.items()}
    assert "pyrunc.examples.wasm.shim" in used
    outside = {name: sorted(m for m in found if m not in allowed
                            and not m.startswith(("pyrunc.protos", "pyrunc.examples")))
               for name, found in used.items()}
    assert {name: found for name, found in outside.items() if found} == {}
