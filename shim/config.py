"""Host-level settings for the shims: `/etc/pyrunc/config.toml`, or the file PYRUNC_CONFIG names.

containerd gives a shim no host-level configuration through its API; its runtime v2 guide leaves
that to a file of the shim's own. This is pyrunc's. Every setting has a default, which is what
pyrunc does without the file:

    log_level = "info"        # the shims' log level; containerd's -debug still means debug
    grouping = "pod"          # "pod", "container" or "namespace": which containers share a shim

    [warm]                    # the node's warm parent, which forks the shims
    enabled = true
    idle_timeout = 300        # seconds without a fork and without a shim before it exits
    ksm = true                # mark its memory for the kernel's samepage merging

and the shim's own table (`[runc]` for the runc shim: defaults for the runc options when
containerd sends none, field by field), declared by its Shim's `config` mapping.

`start` reads the file for every container, so it must stay cheap: tomllib (about 25 ms to import
into a bare interpreter) runs only when the file has changed since the last `start`. What it found
valid is kept in /run/pyrunc as flat `key=value` lines, under the file's inode, size, mtime and
ctime and the schema; the next `start` reads those. The same lines travel to the shim that start
starts, so a shim keeps the settings it started with whatever the file becomes later.

A file that is not TOML, cannot be read, or has a key or a value that is not one of these fails
`start` with the file's path, the key and what was expected, before anything is started.

`python -m pyrunc.shim.config [--shim=MODULE]` prints the effective settings, each with where it
came from.
"""

from __future__ import annotations

import posix

from pyrunc.shim.paths import join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from pyrunc.shim.api import Shim

__all__ = ["DEFAULT_PATH", "ENV", "ConfigError", "Settings", "load", "settings_for"]

DEFAULT_PATH = "/etc/pyrunc/config.toml"
ENV = "PYRUNC_CONFIG"
CACHE_DIR = "/run/pyrunc"
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")
GROUPINGS = ("pod", "container", "namespace")

# The framework's keys: name -> (type, default, allowed values or None).
FRAMEWORK: dict[str, tuple[type, Any, tuple[Any, ...] | None]] = {
    "log_level": (str, "info", LOG_LEVELS),
    "grouping": (str, "pod", GROUPINGS),
    "warm.enabled": (bool, True, None),
    "warm.idle_timeout": (float, 300.0, None),
    "warm.ksm": (bool, True, None),
}
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}


class ConfigError(ValueError):
    """A configuration file that cannot be used; the text names the file and the key."""


class Settings:
    """The effective settings: `values` by dotted key, and where each came from."""

    __slots__ = ("path", "sources", "values")

    def __init__(self, path: str, values: dict[str, Any], sources: dict[str, str]) -> None:
        self.path = path
        self.values = values
        self.sources = sources  # key -> the file's path, or "default"

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def section(self, name: str) -> dict[str, Any]:
        """{key: value} of one table, without its prefix."""
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}

    def encode(self) -> str:
        """The values as `key=value` lines (strings hold no control characters: checked)."""
        return "".join(f"{k}={_text(v)}\n" for k, v in sorted(self.values.items()))


def schema(shim: Shim | None) -> dict[str, tuple[type, Any, tuple[Any, ...] | None]]:
    keys = dict(FRAMEWORK)
    if shim is not None and shim.config_table:
        for name, (kind, default) in shim.config.items():
            keys[f"{shim.config_table}.{name}"] = (kind, default, None)
    return keys


def defaults(shim: Shim | None, path: str = "") -> Settings:
    keys = schema(shim)
    return Settings(path, {k: d for k, (_, d, _) in keys.items()}, dict.fromkeys(keys, "default"))


def config_path() -> str:
    value = posix.environ.get(ENV.encode())
    return value.decode() if value else DEFAULT_PATH


# --- start's path: the cache ----------------------------------------------------------------


def settings_for(shim: Shim) -> Settings:
    """The settings `start` runs with: from the cache when the file is unchanged, else read and
    checked (ConfigError when it cannot be used) and cached."""
    path = config_path()
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return defaults(shim, path)
    except OSError as e:
        from pyrunc.shim.errors import describe

        raise ConfigError(f"configuration {path}: {describe(e, 'stat')}") from e
    keys = schema(shim)
    stamp = f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{keys!r}"
    cache = _cache_path(path, shim.module)
    try:
        with open(cache, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        text = ""
    head, _, body = text.partition("\n")
    if head == stamp.replace("\n", " "):
        try:
            return decode(body, shim, path)
        except ValueError:
            pass  # written by something else: read the file again
    settings = load(path, shim)
    _write_cache(cache, stamp.replace("\n", " ") + "\n" + settings.encode())
    return settings


def _cache_path(path: str, module: str) -> str:
    from pyrunc.shim.address import sha256_hex

    name = sha256_hex(f"{path}\0{module}".encode())[:16]
    return join(CACHE_DIR, f"config-{name}")


def _write_cache(cache: str, text: str) -> None:
    tmp = f"{cache}.{posix.getpid()}"
    try:
        try:  # noqa: SIM105 -- contextlib is one more import on start's path
            posix.mkdir(CACHE_DIR, 0o700)
        except FileExistsError:
            pass
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                        0o600)
        try:
            posix.write(fd, text.encode("utf-8", "surrogateescape"))
        finally:
            posix.close(fd)
        posix.rename(tmp, cache)
    except OSError:  # a cache that cannot be written only costs the next start a parse
        try:  # noqa: SIM105 -- contextlib is one more import on start's path
            posix.unlink(tmp)
        except OSError:
            pass


def decode(text: str, shim: Shim | None, path: str = "") -> Settings:
    """Settings from encode()'s lines, which start or the cache wrote: every key of the schema
    must be there. Sources are not kept: the values are what counts."""
    keys = schema(shim)
    values: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or key not in keys:
            raise ValueError(f"not a settings line: {line!r}")
        values[key] = _parse(keys[key][0], raw)
    if set(values) != set(keys):
        raise ValueError("settings lines without every key")
    return Settings(path, values, dict.fromkeys(values, path or "start"))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse(kind: type, raw: str) -> Any:
    if kind is bool:
        if raw not in ("true", "false"):
            raise ValueError(f"not a boolean: {raw!r}")
        return raw == "true"
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw


# --- reading the file -----------------------------------------------------------------------


def load(path: str, shim: Shim | None) -> Settings:
    """Read and check the file (a missing one gives the defaults); ConfigError says what is
    wrong, naming the file and the key."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return defaults(shim, path)
    except OSError as e:
        from pyrunc.shim.errors import describe

        raise ConfigError(f"configuration {path}: {describe(e, 'read')}") from e
    import tomllib

    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"configuration {path}: not UTF-8 text: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration {path}: not TOML: {e}") from e
    return check(document, path, shim)


def check(document: Mapping[str, Any], path: str, shim: Shim | None) -> Settings:
    """Settings from a parsed file: every key must be known and of its type."""
    keys = schema(shim)
    tables = {k.partition(".")[0] for k in keys if "." in k}
    settings = defaults(shim, path)
    flat: dict[str, Any] = {}
    for name, value in document.items():
        if name in tables:
            if not isinstance(value, dict):
                raise ConfigError(f"configuration {path}: {name}: expected a table, got "
                                  f"{_kind(value)}")
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    for key, value in flat.items():
        if key not in keys:
            raise ConfigError(f"configuration {path}: unknown key {_show(key)} (known: "
                              f"{', '.join(sorted(keys))})")
        kind, _, allowed = keys[key]
        value = _checked(path, key, kind, value)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"configuration {path}: {key}: expected one of "
                              f"{', '.join(_show(a) for a in allowed)}, got {_show(value)}")
        settings.values[key] = value
        settings.sources[key] = path
    return settings


def _checked(path: str, key: str, kind: type, value: Any) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"configuration {path}: {key}: expected {_TYPE_NAMES[kind]}, got "
                          f"{_kind(value)} {_show(value)}".rstrip())
    if kind is float and not value > 0:
        raise ConfigError(f"configuration {path}: {key}: expected a number above 0, got "
                          f"{_show(value)}")
    if kind is int and value < 0:
        raise ConfigError(f"configuration {path}: {key}: expected 0 or more, got {value}")
    if kind is str and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"configuration {path}: {key}: expected a string without control "
                          f"characters, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    """A value as the file would have it: strings in Go's %q, booleans as TOML writes them."""
    if isinstance(value, str):
        from pyrunc.shim.errors import quote

        return quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return ""
    return str(value)


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return next((n for t, n in names.items() if type(value) is t), type(value).__name__)


# --- python -m pyrunc.shim.config ------------------------------------------------------------


def describe_settings(settings: Settings) -> str:
    width = max(len(k) for k in settings.values)
    lines = [f"# {settings.path}"]
    for key in sorted(settings.values):
        lines.append(f"{key:<{width}} = {_text(settings.values[key])!s:<20}  "
                     f"# {settings.sources[key]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys

    from pyrunc.shim.api import load_shim

    args = sys.argv[1:] if argv is None else argv
    module = next((a.partition("=")[2] for a in args if a.startswith("--shim=")),
                  "pyrunc.shim.runc_shim")
    try:
        settings = load(config_path(), load_shim(module))
    except ValueError as e:
        print(f"pyrunc: {e}", file=sys.stderr)
        return 1
    print(describe_settings(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
