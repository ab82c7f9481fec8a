"""ttrpc, the protocol containerd speaks to its shims: pure framing and codec, thin threaded I/O.

frame.py     bytes <-> frames (no protobuf, no I/O)
protocol.py  frames <-> Request/Response envelopes and the per-connection rules (no I/O)
status.py    gRPC codes and TTRPCError, with containerd-style error messages
server.py    blocking sockets and threads: accept, peer-credential check, a reader thread per
             connection, a thread per call (Go's goroutine per request)
client.py    blocking client: concurrent unary calls from many threads on one connection
"""

from .client import Client, ClientClosedError
from .server import CallContext, Method, Server
from .status import (
    Code,
    TTRPCError,
    already_exists,
    deadline_exceeded,
    failed_precondition,
    internal,
    invalid_argument,
    not_found,
    resource_exhausted,
    unimplemented,
    unknown,
)

__all__ = [
    "CallContext",
    "Client",
    "ClientClosedError",
    "Code",
    "Method",
    "Server",
    "TTRPCError",
    "already_exists",
    "deadline_exceeded",
    "failed_precondition",
    "internal",
    "invalid_argument",
    "not_found",
    "resource_exhausted",
    "unimplemented",
    "unknown",
]
