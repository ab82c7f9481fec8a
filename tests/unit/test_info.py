"""`-info`: the RuntimeInfo encoding, Go's JSON re-marshalling of runc's features, the options,
and finding runc as Go's exec.LookPath does.

The expected features bytes below are what containerd 2.1's Go shim (containerd-shim-runc-v2
2.1.9, Debian sid) printed for the same `runc features` output; tests/integration/test_info.py
compares against that binary itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pyrunc.protos import introspection_pb2, runc_options_pb2, runtimeoptions_pb2
from pyrunc.shim import info
from pyrunc.shim.info import InfoError, go_features_json, look_path

# --- the encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [None, b"", b"\x0a\x1acontainerd.runc.v1.Options"])
@pytest.mark.parametrize("features", [None, b'{"hooks":["prestart"]}', b"x" * 300])
@pytest.mark.parametrize("revision", ["", "abc123"])
def test_runtime_info_is_encoded_as_protobuf_would(options: bytes | None,
                                                     features: bytes | None,
                                                     revision: str) -> None:
    expected = introspection_pb2.RuntimeInfo(name="io.containerd.foo.v3")
    expected.version.version = "0.1.0"
    expected.version.revision = revision
    if options is not None:
        expected.options.ParseFromString(options)
    features_any = None
    if features is not None:
        expected.features.type_url = info.FEATURES_TYPE_URL
        expected.features.value = features
        features_any = info.encode_any(info.FEATURES_TYPE_URL, features)
    encoded = info.encode_runtime_info("io.containerd.foo.v3", "0.1.0", revision, options,
                                       features_any)
    assert encoded == expected.SerializeToString()
    decoded = introspection_pb2.RuntimeInfo.FromString(encoded)
    assert decoded.HasField("options") == (options is not None)
    assert decoded.HasField("features") == (features is not None)


@pytest.mark.parametrize(("url", "value"), [("a/b.C", b""), ("", b"\x08\x01"), ("x" * 200, b"y")])
def test_any_is_encoded_as_protobuf_would(url: str, value: bytes) -> None:
    assert info.encode_any(url, value) == any_pb2.Any(type_url=url, value=value)\
        .SerializeToString()


def test_the_proto_names_match_containerds() -> None:
    assert introspection_pb2.RuntimeInfo.DESCRIPTOR.full_name == "containerd.types.RuntimeInfo"
    assert introspection_pb2.RuntimeVersion.DESCRIPTOR.full_name == \
        "containerd.types.RuntimeVersion"
    numbers = {f.name: f.number for f in introspection_pb2.RuntimeInfo.DESCRIPTOR.fields}
    assert numbers == {"name": 1, "version": 2, "options": 3, "features": 4, "annotations": 5}


# --- features, as Go's encoding/json re-marshals them ------------------------------------------

# (runc's output, what the Go shim put under `features`; None: no features at all)
GO_FEATURES = [
    # unknown fields go, the struct's order comes back, empty lists and strings go
    (b'{"ociVersionMin":"1.0.0","unknown":1,"linux":{"cgroup":{"v1":false,"rdma":true,"x":2},'
     b'"intelRdt":{"enabled":true,"schemata":true},"netDevices":{"enabled":true}},"hooks":[]}',
     b'{"ociVersionMin":"1.0.0","linux":{"cgroup":{"v1":false,"rdma":true},'
     b'"intelRdt":{"enabled":true}}}'),
    (b'{"ociVersionMax":"1","ociVersionMin":"0"}', b'{"ociVersionMin":"0","ociVersionMax":"1"}'),
    # escapes: <>& and U+2028 escaped, other non-ASCII raw, \b \f named, DEL raw; keys sorted
    (b'{"annotations":{"b":"<&>","a":"\\u2028\\u00e9\\u0007\\b\\f\\t\\n\\r\\u007f"}}',
     b'{"annotations":{"a":"\\u2028\xc3\xa9\\u0007\\b\\f\\t\\n\\r\x7f",'
     b'"b":"\\u003c\\u0026\\u003e"}}'),
    (b'{"ociVersionMin":"\\"\\\\/\\u2029"}', b'{"ociVersionMin":"\\"\\\\/\\u2029"}'),
    (b'{"ociVersionMin":"\\u0000\\u001f"}', b'{"ociVersionMin":"\\u0000\\u001f"}'),
    (b'{"annotations":{"Z":"1","a":"2","\xc3\xa9":"3","B":"4"}}',
     b'{"annotations":{"B":"4","Z":"1","a":"2","\xc3\xa9":"3"}}'),
    # null: a nil pointer, slice or map; a string keeps its value; in a list or map: ""
    (b"null", b"{}"),
    (b'  {"hooks": null}  ', b"{}"),
    (b'{"linux":null}', b"{}"),
    (b'{"linux":{}}', b'{"linux":{}}'),
    (b'{"linux":{"cgroup":{"v1":null}}}', b'{"linux":{"cgroup":{}}}'),
    (b'{"hooks":["a",null]}', b'{"hooks":["a",""]}'),
    (b'{"annotations":{"a":null}}', b'{"annotations":{"a":""}}'),
    (b'{"ociVersionMin":"a","ociVersionMin":null}', b'{"ociVersionMin":"a"}'),
    (b'{"annotations":{}}', b"{}"),
    (b'{"linux":{"namespaces":null,"capabilities":[]}}', b'{"linux":{}}'),
    (b'{"linux":{"seccomp":{"enabled":false}}}', b'{"linux":{"seccomp":{"enabled":false}}}'),
    # names match regardless of case (and U+017F, U+212A fold to s, k); duplicates: the last,
    # or merged
    (b'{"OCIVERSIONMIN":"1"}', b'{"ociVersionMin":"1"}'),
    (b'{"ociver\xc5\xbfionmin":"s"}', b'{"ociVersionMin":"s"}'),
    (b'{"hoo\xe2\x84\xaas":["k"]}', b'{"hooks":["k"]}'),
    (b'{"oci_version_min":"u"}', b"{}"),
    (b'{"ociVers\xc4\xb0onMin":"i"}', b"{}"),
    (b'{"ociversionmin":"lower","ociVersionMin":"exact"}', b'{"ociVersionMin":"exact"}'),
    (b'{"ociVersionMin":"1","ociVersionMin":"2"}', b'{"ociVersionMin":"2"}'),
    (b'{"linux":{"cgroup":{"v1":true}},"linux":{"cgroup":{"v2":true}}}',
     b'{"linux":{"cgroup":{"v1":true,"v2":true}}}'),
    (b'{"linux":{"apparmor":{"enabled":true}},"linux":null,"linux":{"selinux":{}}}',
     b'{"linux":{"selinux":{}}}'),
    (b'{"annotations":{"a":"1"},"annotations":{"b":"2"}}', b'{"annotations":{"a":"1","b":"2"}}'),
    (b'{"hooks":["a"],"hooks":["b","c"]}', b'{"hooks":["b","c"]}'),
    (b'{"Linux":{"CGroup":{"V2":true}}}', b'{"linux":{"cgroup":{"v2":true}}}'),
    # invalid UTF-8 and lone surrogates: one U+FFFD per byte, or per surrogate
    (b'{"annotations":{"a":"\\ud800"}}', b'{"annotations":{"a":"\xef\xbf\xbd"}}'),
    (b'{"hooks":["\\ud83d\\ude00"]}', b'{"hooks":["\xf0\x9f\x98\x80"]}'),
    (b'{"hooks":["\\ud83dx"]}', b'{"hooks":["\xef\xbf\xbdx"]}'),
    (b'{"hooks":["\xe2\x82"]}', b'{"hooks":["\xef\xbf\xbd\xef\xbf\xbd"]}'),
    (b'{"hooks":["\xed\xa0\x80"]}', b'{"hooks":["' + b"\xef\xbf\xbd" * 3 + b'"]}'),
    # what Go's json.Unmarshal refuses: no features
    (b"[]", None), (b"true", None), (b'"s"', None), (b"", None),
    (b'{"hooks":"x"}', None), (b'{"hooks":{}}', None), (b'{"hooks":[1]}', None),
    (b'{"linux":[]}', None), (b'{"annotations":{"a":1}}', None),
    (b'{"linux":{"cgroup":{"v1":1}}}', None),
    (b'{"ociVersionMin":"ok","hooks":[1],"mountOptions":["m"]}', None),
    (b'{"x":NaN}', None), (b'{"x":1} x', None), (b'{"x":01}', None), (b'{"x":"\t"}', None),
    (b"\xef\xbb\xbf{}", None), (b'{"hooks":["x"]}\x00', None),
    # but anything well-formed in a field it does not know is fine
    (b'{"x":1e400}', b"{}"), (b'{"a":{"b":[1,2,{"c":"d"}]}}', b"{}"),
    (b'{"x":' + b"[" * 9999 + b"]" * 9999 + b"}", b"{}"),
    (b'{"x":' + b"[" * 10000 + b"]" * 10000 + b"}", None),  # deeper than Go's 10000 levels
]


@pytest.mark.parametrize(("raw", "expected"), GO_FEATURES)
def test_features_are_re_marshalled_as_go_does(raw: bytes, expected: bytes | None) -> None:
    assert go_features_json(raw) == expected


def test_runcs_own_output_comes_back_compact_and_in_order() -> None:
    raw = (b'{\n    "ociVersionMin": "1.0.0",\n    "hooks": [\n        "prestart"\n    ],\n'
           b'    "linux": {\n        "cgroup": {\n            "v1": true\n        }\n    }\n}\n')
    assert go_features_json(raw) == \
        b'{"ociVersionMin":"1.0.0","hooks":["prestart"],"linux":{"cgroup":{"v1":true}}}'


def test_no_output_is_no_features() -> None:
    assert go_features_json(None) is None


# --- options ---------------------------------------------------------------------------------


def runc_options(**fields: object) -> bytes:
    return any_pb2.Any(type_url="containerd.runc.v1.Options",
                       value=runc_options_pb2.Options(**fields).SerializeToString()
                       ).SerializeToString()


def test_no_options_echo_nothing_and_name_no_runc() -> None:
    assert info.read_options(b"") == (None, "")


@pytest.mark.parametrize("prefix", ["", "type.googleapis.com/", "types.containerd.io/x/"])
def test_runc_options_are_echoed_re_encoded_under_the_bare_name(prefix: str) -> None:
    options = runc_options_pb2.Options(binary_name="/usr/sbin/runc", root="/r")
    # fields out of order, one set twice, a zero written out, and a field this proto lacks
    value = (runc_options_pb2.Options(root="/r").SerializeToString()
             + runc_options_pb2.Options(binary_name="/old").SerializeToString()
             + options.SerializeToString() + b"\x08\x00" + b"\xa0\x06\x07")
    data = any_pb2.Any(type_url=prefix + "containerd.runc.v1.Options", value=value)
    echo, binary = info.read_options(data.SerializeToString())
    assert binary == "/usr/sbin/runc"
    assert echo is not None
    decoded = any_pb2.Any.FromString(echo)
    assert decoded.type_url == "containerd.runc.v1.Options"
    # as Go re-marshals: known fields in number order, zeros left out, unknown ones kept at the end
    assert decoded.value == options.SerializeToString() + b"\xa0\x06\x07"


def test_empty_runc_options_are_echoed_without_a_value() -> None:
    echo, binary = info.read_options(runc_options())
    assert (echo, binary) == (b"\x0a\x1acontainerd.runc.v1.Options", "")


@pytest.mark.parametrize(("data", "error"), [
    (b"\xff\xff", "proto: cannot parse invalid wire-format data"),
    (any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\xff").SerializeToString(),
     "proto: cannot parse invalid wire-format data"),
    (any_pb2.Any(type_url="io.example.Nope", value=b"").SerializeToString(),
     "type with url io.example.Nope: not found"),
    (any_pb2.Any(type_url="", value=b"\x08\x01").SerializeToString(), "type with url : not found"),
    (b"\x0a\x00", "type with url : not found"),
    (any_pb2.Any(type_url="google.protobuf.Empty").SerializeToString(),
     "type with url google.protobuf.Empty: not found"),  # Go: invalid type *emptypb.Empty
])
def test_options_that_do_not_read_fail_in_gos_words(data: bytes, error: str) -> None:
    with pytest.raises(InfoError) as e:
        info.read_options(data)
    assert str(e.value) == f"failed to read runtime options (*options.Options): {error}"


def test_cris_runtime_options_name_the_runc_of_their_config(tmp_path: Path) -> None:
    """CRI sends runtimeoptions.v1.Options to every runtime not named runc: pyrunc reads their
    TOML as Create does (the Go shim refuses them)."""
    config = tmp_path / "runtime.toml"
    config.write_text('BinaryName = "/opt/runc"\nSystemdCgroup = true\n')
    message = runtimeoptions_pb2.Options(config_path=str(config))
    data = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=message.SerializeToString())
    echo, binary = info.read_options(data.SerializeToString())
    assert binary == "/opt/runc"
    assert echo == info.encode_any("runtimeoptions.v1.Options", message.SerializeToString())
    body = runtimeoptions_pb2.Options(config_body=b'BinaryName = "crun"\n')
    data = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=body.SerializeToString())
    assert info.read_options(data.SerializeToString())[1] == "crun"


def test_a_runtime_config_that_does_not_read_says_so(tmp_path: Path) -> None:
    message = runtimeoptions_pb2.Options(config_path=str(tmp_path / "missing.toml"))
    data = any_pb2.Any(type_url="runtimeoptions.v1.Options", value=message.SerializeToString())
    with pytest.raises(InfoError, match=r"^failed to read runtime options "
                                        r"\(runtimeoptions\.v1\.Options\): runtime config"):
        info.read_options(data.SerializeToString())


# --- finding runc, as exec.LookPath ------------------------------------------------------------


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_look_path_searches_path_in_order(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    executable(first / "runc", mode=0o644)  # not executable: passed over
    executable(second / "runc")
    (first / "crun").mkdir()  # a directory: passed over
    executable(second / "crun")
    monkeypatch.setenv("PATH", f"{first}/:{second}")
    assert look_path("runc") == f"{second}/runc"
    assert look_path("crun") == f"{second}/crun"


def test_look_path_says_what_go_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LookupError) as e:
        look_path("no-runc")
    assert str(e.value) == 'exec: "no-runc": executable file not found in $PATH'
    with pytest.raises(LookupError) as e:
        look_path(f"{tmp_path}/missing")
    assert str(e.value) == \
        f'exec: "{tmp_path}/missing": stat {tmp_path}/missing: no such file or directory'
    with pytest.raises(LookupError) as e:
        look_path(str(tmp_path))
    assert str(e.value) == f'exec: "{tmp_path}": is a directory'
    executable(tmp_path / "plain", mode=0o644)  # (for root too: no execute bit at all)
    with pytest.raises(LookupError) as e:
        look_path(f"{tmp_path}/plain")
    assert str(e.value) == f'exec: "{tmp_path}/plain": permission denied'


def test_look_path_with_a_slash_is_taken_as_it_is(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    executable(tmp_path / "runc")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "")
    assert look_path("./runc") == "./runc"
    with pytest.raises(LookupError, match="not found in"):
        look_path("runc")  # an empty PATH has no entries, not "."


@pytest.mark.parametrize("path", [".", "", "rel"])
def test_look_path_refuses_what_a_relative_path_entry_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    (tmp_path / "rel").mkdir()
    executable(tmp_path / "runc")
    executable(tmp_path / "rel" / "runc")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{path}:/nonexistent" if path == "" else path)
    with pytest.raises(LookupError) as e:
        look_path("runc")
    assert str(e.value) == \
        'exec: "runc": cannot run executable found relative to current directory'


# --- the whole answer ------------------------------------------------------------------------


def fake_runc(path: Path, features: bytes | None) -> Path:
    """A runc whose `features` prints `features` (exits 1 without)."""
    if features is None:
        return executable(path, "#!/bin/sh\nexit 1\n")
    (path.parent / f"{path.name}.json").write_bytes(features)
    return executable(path, '#!/bin/sh\n[ "$1" = features ] && exec /bin/cat "$0.json"\n'
                            "exit 1\n")


def test_runtime_info_carries_what_runc_says(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "runc", b'{\n  "ociVersionMax": "1.2.0",\n  "x": 1\n}\n')
    out = introspection_pb2.RuntimeInfo.FromString(
        info.runtime_info("io.containerd.foo.v3", runc_options(binary_name=str(runc))))
    assert out.name == "io.containerd.foo.v3"
    assert out.version.version == info.__version__ and not out.version.revision
    assert out.options.type_url == "containerd.runc.v1.Options"
    assert out.features.type_url == \
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    assert out.features.value == b'{"ociVersionMax":"1.2.0"}'
    assert not out.annotations


def test_a_runc_without_features_gives_none_and_succeeds(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "old-runc", None)
    out = introspection_pb2.RuntimeInfo.FromString(
        info.runtime_info("io.containerd.pyrunc.v1", runc_options(binary_name=str(runc))))
    assert not out.HasField("features") and out.HasField("options")


def test_a_runc_that_is_not_there_is_an_error() -> None:
    with pytest.raises(InfoError) as e:
        info.runtime_info("io.containerd.pyrunc.v1", runc_options(binary_name="no-runc"))
    assert str(e.value) == ('failed to look up the path of "no-runc": exec: "no-runc": '
                            "executable file not found in $PATH")


def test_the_info_action_writes_protobuf_or_the_error(tmp_path: Path) -> None:
    runc = fake_runc(tmp_path / "runc", b"{}")
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "pyrunc.shim", "-info"], input=b"",
                        capture_output=True, env=env, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    out = introspection_pb2.RuntimeInfo.FromString(ok.stdout)
    assert (out.name, out.features.value) == ("io.containerd.pyrunc.v1", b"{}")
    assert runc.exists()
    bad = subprocess.run([sys.executable, "-m", "pyrunc.shim", "-info"],
                         input=runc_options(binary_name="no-runc"), capture_output=True,
                         env=env, timeout=30, check=False)
    assert (bad.returncode, bad.stdout) == (1, b"")
    assert bad.stderr.decode() == ('io.containerd.pyrunc.v1: failed to look up the path of '
                                   '"no-runc": exec: "no-runc": executable file not found in '
                                   "$PATH")


def test_info_loads_neither_click_nor_protobuf_without_options(tmp_path: Path) -> None:
    fake_runc(tmp_path / "runc", b"{}")
    code = ("import sys, runpy; sys.argv = ['containerd-shim-pyrunc-v1', '-info']\n"
            "try:\n    runpy.run_module('pyrunc.shim', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('click', 'google', "
            "'asyncio', 'pyrunc.shim.task'))), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], input=b"", capture_output=True,
                            env={**os.environ, "PATH": str(tmp_path)}, timeout=30, check=False)
    assert result.stderr.decode().strip() == "[]", result.stderr
