"""gRPC status codes and the error a handler raises to answer with one.

containerd turns a shim's status back into an errdefs error by code, then strips a trailing
": <class>" from the message before wrapping it (protocol-facts §1.6). Go shims therefore send
messages such as "container not created: not found"; the helpers below build exactly that form:

    helper                 code                    message suffix     containerd sees
    not_found              5  NotFound             ": not found"      errdefs.ErrNotFound
    already_exists         6  AlreadyExists        ": already exists" errdefs.ErrAlreadyExists
    failed_precondition    9  FailedPrecondition   ": failed precondition"
    invalid_argument       3  InvalidArgument      ": invalid argument"
    unimplemented          12 Unimplemented        ": not implemented" (2.x: v3 -> v2 fallback)
    unknown, internal, resource_exhausted, deadline_exceeded: the message as given.

containerd 1.6/1.7 map only 1, 3, 4, 5, 6, 9, 12 and 14 to their own classes; everything else
becomes Unknown there. 2.x maps every code.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def _as_code(code: int) -> int:
    # A peer may send a code this enum does not know; keep it as a plain int rather than fail.
    try:
        return Code(code)
    except ValueError:
        return code


def code_name(code: int) -> str:
    code = _as_code(code)
    return code.name if isinstance(code, Code) else f"Code({code})"


class TTRPCError(Exception):
    """A non-OK status: raised by handlers to answer with it, and by the client on receiving one."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code: int = _as_code(code)
        self.message = message

    def __str__(self) -> str:
        # The form Go's grpc status errors print, familiar from containerd's logs.
        return f"ttrpc: code = {code_name(self.code)} desc = {self.message}"


def not_found(message: str) -> TTRPCError:
    return TTRPCError(Code.NOT_FOUND, f"{message}: not found")


def already_exists(message: str) -> TTRPCError:
    return TTRPCError(Code.ALREADY_EXISTS, f"{message}: already exists")


def failed_precondition(message: str) -> TTRPCError:
    return TTRPCError(Code.FAILED_PRECONDITION, f"{message}: failed precondition")


def invalid_argument(message: str) -> TTRPCError:
    return TTRPCError(Code.INVALID_ARGUMENT, f"{message}: invalid argument")


def unimplemented(message: str) -> TTRPCError:
    # errdefs calls the class "not implemented", not "unimplemented".
    return TTRPCError(Code.UNIMPLEMENTED, f"{message}: not implemented")


def unknown(message: str) -> TTRPCError:
    return TTRPCError(Code.UNKNOWN, message)


def internal(message: str) -> TTRPCError:
    return TTRPCError(Code.INTERNAL, message)


def resource_exhausted(message: str) -> TTRPCError:
    return TTRPCError(Code.RESOURCE_EXHAUSTED, message)


def deadline_exceeded(message: str) -> TTRPCError:
    return TTRPCError(Code.DEADLINE_EXCEEDED, message)
