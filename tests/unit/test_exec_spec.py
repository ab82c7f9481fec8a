"""The exec's process spec takes the request's `terminal`, as the Go shim makes it."""

from __future__ import annotations

import json

import pytest

from pyrunc.oci.container import ContainerError, with_terminal


def test_the_requests_terminal_is_written_into_the_spec() -> None:
    spec = json.dumps({"args": ["sh"], "terminal": False, "cwd": "/"}).encode()
    assert json.loads(with_terminal(spec, True)) == {"args": ["sh"], "terminal": True, "cwd": "/"}


def test_a_spec_asking_for_a_tty_loses_it_when_the_request_does_not() -> None:
    spec = json.dumps({"args": ["sh"], "terminal": True}).encode()
    assert json.loads(with_terminal(spec, False))["terminal"] is False


def test_a_spec_without_the_field_gets_it_only_when_a_tty_is_asked_for() -> None:
    spec = b'{"args":["sh"]}'
    assert with_terminal(spec, False) is spec
    assert json.loads(with_terminal(spec, True))["terminal"] is True


def test_a_spec_that_agrees_is_handed_on_unchanged() -> None:
    spec = b'{ "terminal" : true, "args" : ["sh"], "x-unknown": {"kept": 1} }'
    assert with_terminal(spec, True) is spec


def test_unknown_fields_survive_the_rewrite() -> None:
    spec = b'{"terminal": false, "args": ["sh"], "x-unknown": {"kept": 1}}'
    assert json.loads(with_terminal(spec, True))["x-unknown"] == {"kept": 1}


@pytest.mark.parametrize("spec", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_spec_that_is_no_json_object_is_refused(spec: bytes) -> None:
    with pytest.raises(ContainerError, match="invalid process spec"):
        with_terminal(spec, True)
