"""gRPC server interceptors that rewrite a method's handler, and the handlers they make.

The three interceptors of the server (metrics, auth, the decode guard) each take
the handler grpc found for a call and hand back one of the same shape (unary or
streaming request and response, the same serializers) around another behaviour:
:class:`HandlerInterceptor` is that step once, :func:`same_shape` builds the
handler, :func:`preceded` runs something before a servicer method, whether it
returns (a coroutine function) or streams (an async generator function).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


class HandlerInterceptor(_Interceptor):
    """An interceptor that rewrites the handler of each known method with
    :meth:`intercept_handler`, once per method: the rewrite depends on the method
    alone (what a call brings, its metadata, is read inside the handler), so it is
    kept and every later call to the method gets it without asking the next
    interceptors again. The first interceptor of a server answers each call from
    its table: one dict lookup where three interceptors rebuilt three handlers
    and their closures per call. An unknown method has no handler (None): it is
    passed on as it is (never kept: a client can send any name), and grpc answers
    UNIMPLEMENTED."""

    def __init__(self) -> None:
        self._rewritten: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        rewritten = self._rewritten.get(method)
        if rewritten is not None:
            return rewritten
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        rewritten = self._rewritten[method] = self.intercept_handler(handler, method)
        return rewritten

    def intercept_handler(self, handler: Handler, method: str) -> Handler:
        """The handler calls to ``method`` (``/package.Service/Method``) run instead of
        ``handler`` (or ``handler`` itself)."""
        raise NotImplementedError


# (attribute, go-grpc-prometheus' grpc_type, constructor), in the order they are tried.
_KINDS: tuple[tuple[str, str, Callable[..., Handler]], ...] = (
    ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler),
)


def _kind(handler: Handler) -> tuple[str, str, Callable[..., Handler]]:
    """The first of :data:`_KINDS` that ``handler`` has a behaviour for; bidi if none."""
    return next((k for k in _KINDS if getattr(handler, k[0]) is not None), _KINDS[-1])


def grpc_type(handler: Handler) -> str:
    """``unary``, ``server_stream``, ``client_stream`` or ``bidi_stream`` (the
    ``grpc_type`` label of go-grpc-prometheus)."""
    return _kind(handler)[1]


def behaviour(handler: Handler) -> Any:
    """The servicer method ``handler`` runs (the stubs type it for the sync API)."""
    return getattr(handler, _kind(handler)[0])


def same_shape(
    handler: Handler,
    method: Callable[..., Any],
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """A handler of the same kind and serializers as ``handler`` that runs ``method``;
    ``request_deserializer`` replaces ``handler``'s if given."""
    return _kind(handler)[2](
        method,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def preceded(method: Any, first: Callable[[Any, Any], Awaitable[None]]) -> Any:
    """``method`` (a servicer's coroutine or async generator function) with
    ``first(request, context)`` awaited before it starts, in the call's own context
    (what ``first`` sets in a context variable, ``method`` reads)."""
    if inspect.isasyncgenfunction(method):

        async def stream(request: Any, context: Any) -> Any:
            await first(request, context)
            async for response in method(request, context):
                yield response

        return stream

    async def call(request: Any, context: Any) -> Any:
        await first(request, context)
        return await method(request, context)

    return call
