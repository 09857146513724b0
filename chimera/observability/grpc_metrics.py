"""The gRPC metrics interceptor: the go-grpc-prometheus counters and histogram.

``grpc_server_started_total``, ``grpc_server_handled_total`` (with
``grpc_code``) and ``grpc_server_handling_seconds``, labelled ``grpc_type``,
``grpc_service`` and ``grpc_method`` like go-grpc-prometheus, so existing
dashboards work. It is the first interceptor, so it wraps whatever the next
ones return: a call the auth interceptor refuses is counted as
UNAUTHENTICATED. It also puts the caller's address in the log context
(``peer``) for the call.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from chimera.observability.logs import log_context
from chimera.observability.metrics import GRPC_HANDLED, GRPC_HANDLING, GRPC_STARTED

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Context = grpc.aio.ServicerContext[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.aio.ServerInterceptor
    _Context = grpc.aio.ServicerContext


class MetricsInterceptor(_Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED, not counted
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        return _measured(handler, service, method)


class _Call:
    """One call's labels and clock."""

    __slots__ = ("labels", "started")

    def __init__(self, kind: str, service: str, method: str, context: _Context) -> None:
        self.labels = (kind, service, method)
        self.started = time.perf_counter()
        GRPC_STARTED.labels(*self.labels).inc()
        log_context(peer=context.peer())

    def done(self, code: grpc.StatusCode) -> None:
        GRPC_HANDLED.labels(*self.labels, code.name).inc()
        GRPC_HANDLING.labels(*self.labels).observe(time.perf_counter() - self.started)


def _code(context: _Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the call ends with: what was set (``abort`` sets it), else OK
    after a return, CANCELLED after a cancellation, UNKNOWN after an error."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions give the number
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, Exception):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.CANCELLED


def _measured(
    handler: grpc.RpcMethodHandler[Any, Any], service: str, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with the same shape, counted."""
    behavior: Any  # the stubs type behaviours for the sync API
    if handler.unary_unary is not None:
        kind, behavior, make = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream is not None:
        kind, behavior = "server_stream", handler.unary_stream
        make = grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary is not None:
        kind, behavior = "client_stream", handler.stream_unary
        make = grpc.stream_unary_rpc_method_handler
    else:
        kind, behavior = "bidi_stream", handler.stream_stream
        make = grpc.stream_stream_rpc_method_handler
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: _Context) -> AsyncIterator[Any]:
            call = _Call(kind, service, method, context)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.done(_code(context, error))

        wrapped = streaming
    else:

        async def returning(request: Any, context: _Context) -> Any:
            call = _Call(kind, service, method, context)
            error: BaseException | None = None
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.done(_code(context, error))

        wrapped = returning
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
