"""The gRPC gate: every ``chimera.v1.JobService`` call needs a valid bearer token.

Reflection and health stay open. The interceptor decides each JobService
call's :class:`chimera.auth.principal.Principal` once, from its metadata (the
token is verified there, and only there): a call without a valid token is
answered UNAUTHENTICATED and never reaches the servicer; any other runs with
its principal in :func:`call_principal`, which the servicer reads (what the
caller may do is its business: scopes and jobs). Without auth, every call's
principal is anonymous.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
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


# Set by the handler AuthInterceptor wraps, in the call's own context (grpc.aio runs
# each call in a task of its own, so the value ends with the call).
_PRINCIPAL: ContextVar[Principal | None] = ContextVar("chimera_grpc_principal", default=None)


def call_principal() -> Principal:
    """The caller of the JobService call being handled, as :class:`AuthInterceptor`
    decided it for this call. Only a bug (the interceptor not installed) finds none."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise RuntimeError("no principal for this call: the AuthInterceptor is not installed")
    return principal


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_Interceptor):
    """Decides the principal of each call to the methods under ``protected`` (a service
    path), once: refuses the call if it has none, else runs it with it (:func:`call_principal`)."""

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
        if handler is None or not method.startswith(self._prefix):
            return handler
        try:
            principal = principal_from_metadata(
                self._authenticator, handler_call_details.invocation_metadata
            )
        except Unauthenticated as exc:
            return _refusal(handler, str(exc))
        return _with_principal(handler, principal)


def _with_principal(
    handler: grpc.RpcMethodHandler[Any, Any], principal: Principal
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that runs it with ``principal`` as
    :func:`call_principal`, set in the call's context before its method starts."""

    def wrapped(method: Any) -> Any:
        if inspect.isasyncgenfunction(method):
            async def stream(request: Any, context: Any) -> Any:
                _PRINCIPAL.set(principal)
                async for response in method(request, context):
                    yield response
            return stream

        async def call(request: Any, context: Any) -> Any:
            _PRINCIPAL.set(principal)
            return await method(request, context)
        return call

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrapped(handler.unary_unary), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrapped(handler.unary_stream), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrapped(handler.stream_unary), **kwargs)
    return grpc.stream_stream_rpc_method_handler(wrapped(handler.stream_stream), **kwargs)


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
