"""The server's interceptors rewrite a method's handler once, not on every call."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from chimera.grpc_handlers import Handler, HandlerInterceptor, behaviour, preceded, same_shape


class Counting(HandlerInterceptor):
    """Counts its rewrites, and (inside the handler) the calls that ran through them."""

    def __init__(self) -> None:
        super().__init__()
        self.rewrites: list[str] = []
        self.calls = 0

    def intercept_handler(self, handler: Handler, method: str) -> Handler:
        self.rewrites.append(method)

        async def count(request: object, context: object) -> None:
            self.calls += 1

        return same_shape(handler, preceded(behaviour(handler), count))


async def test_a_method_is_rewritten_once_and_an_unknown_one_never_kept() -> None:
    first, second = Counting(), Counting()
    server = grpc.aio.server(interceptors=[first, second])
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            for _ in range(5):
                reply = await check(health_pb2.HealthCheckRequest())
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            unknown = channel.unary_unary("/no.Such/Method", None, None)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await unknown(b"")
                assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)
    method = "/grpc.health.v1.Health/Check"
    # Every call ran through both rewrites, made once each: the first interceptor
    # answered the later calls from what it kept, without asking the second.
    assert (first.calls, second.calls) == (5, 5)
    assert first.rewrites == second.rewrites == [method]
    assert list(first._rewritten) == list(second._rewritten) == [method]
