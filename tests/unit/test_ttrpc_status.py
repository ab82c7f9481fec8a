"""gRPC codes and containerd-style error messages (pyrunc.shim.ttrpc.status)."""

from __future__ import annotations

import pytest

from pyrunc.shim.ttrpc import status
from pyrunc.shim.ttrpc.status import Code, TTRPCError


@pytest.mark.parametrize(
    ("helper", "code", "message"),
    [
        (status.not_found, Code.NOT_FOUND, "container not created: not found"),
        (status.already_exists, Code.ALREADY_EXISTS, "container not created: already exists"),
        (
            status.failed_precondition,
            Code.FAILED_PRECONDITION,
            "container not created: failed precondition",
        ),
        (status.invalid_argument, Code.INVALID_ARGUMENT, "container not created: invalid argument"),
        (status.unimplemented, Code.UNIMPLEMENTED, "container not created: not implemented"),
        (status.unknown, Code.UNKNOWN, "container not created"),
        (status.internal, Code.INTERNAL, "container not created"),
        (status.resource_exhausted, Code.RESOURCE_EXHAUSTED, "container not created"),
        (status.deadline_exceeded, Code.DEADLINE_EXCEEDED, "container not created"),
    ],
)
def test_helpers_end_messages_with_the_errdefs_class(
    helper: object, code: Code, message: str
) -> None:
    assert callable(helper)
    error = helper("container not created")
    assert isinstance(error, TTRPCError)
    assert (error.code, error.message) == (code, message)


def test_codes_match_grpc() -> None:
    assert [c.value for c in Code] == list(range(17))
    assert Code.UNIMPLEMENTED == 12 and Code.RESOURCE_EXHAUSTED == 8


def test_unknown_code_from_a_peer_is_kept_as_a_number() -> None:
    error = TTRPCError(42, "from the future")
    assert error.code == 42
    assert "Code(42)" in str(error)


def test_error_text_names_code_and_message() -> None:
    assert str(status.not_found("x")) == "ttrpc: code = NOT_FOUND desc = x: not found"
