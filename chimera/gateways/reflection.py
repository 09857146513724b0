"""gRPC server reflection, v1 and v1alpha, serving the protos with their comments.

The servicer (:mod:`chimera.gateways.reflection_servicer`: grpcio-reflection, protobuf's
``descriptor_pb2``, a descriptor pool of every file served, ``descriptors.binpb`` read
and parsed) is built on the first reflection call, not at start-up: ~5 ms of a cold
start that no health check, job or WebSocket needs (scripts/bench_coldstart.py,
tests/test_startup.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc

from chimera.grpc_handlers import Handler

if TYPE_CHECKING:
    _GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:  # generic only in the type stubs
    _GenericHandler = grpc.GenericRpcHandler

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"  # grpcio-reflection's SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_METHODS = frozenset(f"/{name}/ServerReflectionInfo" for name in (V1_SERVICE, V1ALPHA_SERVICE))


class _LazyReflection(_GenericHandler):
    """Answers the two reflection methods with one handler, built when first asked for."""

    def __init__(self, service_names: list[str]) -> None:
        self._service_names = service_names
        self._handler: Handler | None = None

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        if handler_call_details.method not in _METHODS:
            return None
        if self._handler is None:
            from chimera.gateways.reflection_servicer import method_handler

            self._handler = method_handler(self._service_names)
        return self._handler


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection v1 and v1alpha on ``server`` for ``service_names`` (and itself)."""
    server.add_generic_rpc_handlers(
        (_LazyReflection([*service_names, V1_SERVICE, V1ALPHA_SERVICE]),)
    )
