"""Write a faster launcher for the shim binary: `python -m pyrunc.shim.launcher [PATH]`.

containerd executes the shim binary twice per container (`start`, then `delete` once the shim has
gone), so the interpreter's start-up is on the path of every container. The console script pip
writes starts Python with `site`, which finds the virtual environment and reads its `.pth` files
on every run (about 1.3 ms). The launcher written here starts the same interpreter with `-IS`
(isolated, no `site`) and puts on `sys.path`, fixed, the directories that `site` gave the
interpreter that wrote it. Run it again after changing what is installed where.

PATH defaults to the console script's own place (the `scripts` directory of this interpreter), so
`make install` replaces the console script with the launcher.
"""

from __future__ import annotations

import os
import sys
import sysconfig

SCRIPT = "containerd-shim-pyrunc-v1"
ENTRY = "pyrunc.shim.runc_shim"  # the module whose main() the script runs (setup.cfg's entry point)
SHEBANG_MAX = 255  # the kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE - 1)


def site_paths() -> list[str]:
    """The sys.path entries `site` gives this interpreter, in order (what -S leaves out)."""
    import json
    import subprocess

    def path(flags: str) -> list[str]:
        code = "import json, sys; print(json.dumps(sys.path))"
        out = subprocess.run([sys.executable, flags, "-c", code],
                             capture_output=True, text=True, check=True).stdout
        return [str(p) for p in json.loads(out)]

    bare = set(path("-IS"))
    return [p for p in path("-I") if p not in bare and os.path.isdir(p)]


def launcher_text(executable: str, paths: list[str], entry: str = ENTRY) -> str:
    """The launcher's source; ValueError if the interpreter's path cannot be a `#!` line.

    The paths go after the standard library's, where `site` puts them. In front they would save
    about 30 µs a run (the interpreter would not look for pyrunc in lib-dynload first), and let
    anything installed there shadow a standard module."""
    shebang = f"#!{executable} -IS"
    if len(shebang) > SHEBANG_MAX or any(c.isspace() for c in executable):
        from pyrunc.shim.errors import quote

        raise ValueError(f"cannot start {quote(executable)} from a #! line")
    return "\n".join([
        shebang,
        "# Written by `python -m pyrunc.shim.launcher`: the shim binary, without `site`.",
        "import sys",
        f"sys.path += {paths!r}",
        f"from {entry} import main",
        "sys.exit(main())",
        "",
    ])


def write(path: str, text: str) -> None:
    """Replace `path` atomically with an executable file holding `text`."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    path = args[0] if args else os.path.join(sysconfig.get_path("scripts"), SCRIPT)
    try:
        text = launcher_text(sys.executable, site_paths())
    except ValueError as e:
        print(f"pyrunc launcher: {e}; {path} left as it is", file=sys.stderr)
        return 1
    write(path, text)
    print(f"pyrunc launcher: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
