"""The host configuration file (pyrunc.shim.config): its schema, its errors, start's cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyrunc.shim
from pyrunc.oci.options import RuntimeOptions
from pyrunc.shim import config
from pyrunc.shim.runc_shim import RUNC_CONFIG, SHIM
from pyrunc.shim.task import with_defaults

FULL = """\
log_level = "warn"
grouping = "namespace"

[warm]
enabled = false
idle_timeout = 30
ksm = false

[runc]
binary_name = "/usr/local/bin/crun"
root = "/run/pyrunc-runc"
systemd_cgroup = true
io_uid = 1000
"""


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv(config.ENV, str(path))
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))
    return path


def test_without_a_file_every_setting_is_its_default(conf: Path) -> None:
    settings = config.settings_for(SHIM)
    assert settings.values == {
        "log_level": "info", "grouping": "pod", "warm.enabled": True,
        "warm.idle_timeout": 300.0, "warm.ksm": True,
        **{f"runc.{k}": default for k, (_, default) in RUNC_CONFIG.items()}}
    assert set(settings.sources.values()) == {"default"}


def test_a_full_file_sets_each_value_and_says_where_it_came_from(conf: Path) -> None:
    conf.write_text(FULL)
    settings = config.load(str(conf), SHIM)
    assert settings["log_level"] == "warn"
    assert settings["grouping"] == "namespace"
    assert settings["warm.enabled"] is False
    assert settings["warm.idle_timeout"] == 30.0  # an integer is a number of seconds too
    assert settings.section("runc")["binary_name"] == "/usr/local/bin/crun"
    assert settings.section("runc")["io_uid"] == 1000
    assert settings.sources["runc.root"] == str(conf)
    assert settings.sources["runc.criu_path"] == "default"
    assert config.decode(settings.encode(), SHIM).values == settings.values


@pytest.mark.parametrize(("text", "error"), [
    ('grouping = "pods"\n',
     'grouping: expected one of "pod", "container", "namespace", got "pods"'),
    ("log_level = 3\n", "log_level: expected a string, got an integer 3"),
    ("[warm]\nenabled = 1\n", "warm.enabled: expected a boolean, got an integer 1"),
    ('[warm]\nidle_timeout = "5m"\n', 'warm.idle_timeout: expected a number, got a string "5m"'),
    ("[warm]\nidle_timeout = 0\n", "warm.idle_timeout: expected a number above 0, got 0.0"),
    ("[runc]\nio_uid = -1\n", "runc.io_uid: expected 0 or more, got -1"),
    ("[runc]\nio_uid = true\n", "runc.io_uid: expected an integer, got a boolean true"),
    ('[runc]\nroot = "a\\nb"\n',
     'runc.root: expected a string without control characters, got "a\\nb"'),
    ("warm = 1\n", "warm: expected a table, got an integer"),
    ("[warm]\nenable = true\n", 'unknown key "warm.enable" (known: grouping, log_level, '),
    ("shim_cgroup = \"/x\"\n", 'unknown key "shim_cgroup"'),
    ("[runc\n", "not TOML: "),
])
def test_bad_input_names_the_file_the_key_and_what_was_expected(
        conf: Path, text: str, error: str) -> None:
    conf.write_text(text)
    with pytest.raises(config.ConfigError) as raised:
        config.settings_for(SHIM)
    assert str(raised.value).startswith(f"configuration {conf}: {error}"), str(raised.value)


def test_a_file_that_cannot_be_read_is_named_with_what_failed(conf: Path) -> None:
    conf.mkdir()
    with pytest.raises(config.ConfigError) as raised:
        config.settings_for(SHIM)
    assert str(raised.value) == f"configuration {conf}: read {conf}: is a directory"
    conf.rmdir()
    conf.write_bytes(b"log_level = \"\xff\"\n")
    with pytest.raises(config.ConfigError, match="not UTF-8 text"):
        config.settings_for(SHIM)


def test_start_reads_its_cache_until_the_file_changes(conf: Path) -> None:
    conf.write_text('grouping = "container"\n')
    assert config.settings_for(SHIM)["grouping"] == "container"
    cached = list(Path(config.CACHE_DIR).iterdir())
    assert len(cached) == 1 and oct(cached[0].stat().st_mode & 0o777) == "0o600"
    # A second start in a fresh interpreter: the same answer, and tomllib is never imported.
    src = str(Path(pyrunc.shim.__file__ or ".").absolute().parents[2])
    code = (f"import sys; sys.path[:0] = [{src!r}]\n"
            "from pyrunc.shim import config\n"
            f"config.CACHE_DIR = {config.CACHE_DIR!r}\n"
            "from pyrunc.shim.runc_shim import SHIM\n"
            "print(config.settings_for(SHIM)['grouping'], 'tomllib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         env={config.ENV: str(conf)}, check=True).stdout
    assert out.split() == ["container", "False"]
    conf.write_text('grouping = "namespace"\n')  # same size: the mtime and ctime tell
    assert config.settings_for(SHIM)["grouping"] == "namespace"
    conf.write_text("grouping = 1\n")
    with pytest.raises(config.ConfigError):  # a broken file is never taken from the cache
        config.settings_for(SHIM)


def test_a_cache_that_does_not_decode_is_read_again_from_the_file(conf: Path) -> None:
    conf.write_text('log_level = "error"\n')
    config.settings_for(SHIM)
    (cache,) = Path(config.CACHE_DIR).iterdir()
    head = cache.read_text().partition("\n")[0]
    cache.write_text(head + "\nnot a setting\n")
    assert config.settings_for(SHIM)["log_level"] == "error"


def test_the_runc_table_is_runtime_options_less_shim_cgroup() -> None:
    assert {k: d for k, (_, d) in RUNC_CONFIG.items()} == {
        k: v for k, v in RuntimeOptions._defaults.items() if k != "shim_cgroup"}
    assert all(type(d) is kind for kind, d in RUNC_CONFIG.values())


def test_containerds_options_win_field_by_field_over_the_runc_table() -> None:
    defaults = RuntimeOptions(binary_name="crun", root="/run/x", systemd_cgroup=True)
    sent = RuntimeOptions(binary_name="runc", io_uid=5)
    merged = with_defaults(sent, defaults)
    assert (merged.binary_name, merged.root, merged.systemd_cgroup, merged.io_uid) == (
        "runc", "/run/x", True, 5)
    assert with_defaults(sent, RuntimeOptions()) is sent


def test_log_levels_and_debug() -> None:
    from pyrunc.shim import log

    try:
        log.setup(debug=False, fields={}, level="warn")
        assert not log.enabled(log.INFO) and log.enabled(log.WARNING)
        log.setup(debug=True, fields={}, level="warn")  # containerd's -debug still wins
        assert log.enabled(log.DEBUG) and not log.enabled(log.TRACE)
        log.setup(debug=False, fields={}, level="trace")
        assert log.enabled(log.TRACE)
        log.setup(debug=True, fields={}, level="trace")  # and does not hide trace
        assert log.enabled(log.TRACE)
    finally:
        log.setup(debug=False, fields={})


def test_the_command_prints_every_setting_and_its_source(conf: Path) -> None:
    conf.write_text(FULL)
    out = subprocess.run([sys.executable, "-m", "pyrunc.shim.config"], capture_output=True,
                         text=True, env={**os.environ, config.ENV: str(conf)}, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == f"# {conf}"
    by_key = {line.split()[0]: line for line in lines[1:]}
    assert set(by_key) == set(config.defaults(SHIM).values)
    assert by_key["grouping"].split("#")[1].strip() == str(conf)
    assert by_key["runc.criu_path"].split("#")[1].strip() == "default"
    assert "= namespace" in by_key["grouping"]
    conf.write_text("grouping = 2\n")
    bad = subprocess.run([sys.executable, "-m", "pyrunc.shim.config"], capture_output=True,
                         text=True, env={**os.environ, config.ENV: str(conf)})
    assert bad.returncode == 1 and "grouping: expected a string" in bad.stderr
