"""The gRPC gate: every ``chimera.v1.JobService`` call needs a valid bearer token.

Reflection and health stay open. A call without a valid token is answered
UNAUTHENTICATED by the interceptor and never reaches the servicer; the servicer
then reads the caller's :class:`chimera.auth.tokens.Principal` from the same
metadata with :func:`principal_from_metadata` (what it may do is its business:
scopes and jobs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from chimera.auth.principal import Principal
from chimera.auth.tokens import Authenticator, bearer
from chimera.errors import Unauthenticated


def principal_from_metadata(
    authenticator: Authenticator, metadata: Iterable[Any] | None
) -> Principal:
    """The caller named by the ``authorization: Bearer TOKEN`` metadata.

    ``metadata`` is what grpc hands over: ``(key, value)`` pairs (or a mapping).
    """
    if not authenticator.enabled:
        return authenticator.principal(None)
    pairs = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    values = [v for k, v in pairs if str(k).lower() == "authorization"]
    if len(values) > 1:
        raise Unauthenticated("send one authorization metadata entry, not several")
    if not values:
        return authenticator.principal(None)
    value = values[0]
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return authenticator.principal(bearer(text))


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_Interceptor):
    """Refuses unauthenticated calls to the methods under ``protected`` (a service path)."""

    def __init__(self, authenticator: Authenticator, protected: str) -> None:
        self._authenticator = authenticator
        self._prefix = f"/{protected}/"

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        # handler is None for an unknown method: grpc answers UNIMPLEMENTED.
        if handler is None or not self._authenticator.enabled or not method.startswith(
            self._prefix
        ):
            return handler
        try:
            principal_from_metadata(self._authenticator, handler_call_details.invocation_metadata)
        except Unauthenticated as exc:
            return _refusal(handler, str(exc))
        return handler


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
