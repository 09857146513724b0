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

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import grpc

from chimera.auth.principal import Principal
from chimera.auth.tokens import Authenticator, bearer
from chimera.errors import Unauthenticated
from chimera.grpc_handlers import Handler, HandlerInterceptor, behaviour, preceded, same_shape


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


class AuthInterceptor(HandlerInterceptor):
    """Decides the principal of each call to the methods under ``protected`` (a service
    path), once, from the call's metadata as the call starts: refuses the call if it
    has none, else runs it with it (:func:`call_principal`)."""

    def __init__(self, authenticator: Authenticator, protected: str) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._prefix = f"/{protected}/"

    def intercept_handler(self, handler: Handler, method: str) -> Handler:
        if not method.startswith(self._prefix):
            return handler
        authenticator = self._authenticator

        async def authenticate(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            """Sets the principal in the call's context before its method starts."""
            try:
                principal = principal_from_metadata(
                    authenticator, context.invocation_metadata()
                )
            except Unauthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            _PRINCIPAL.set(principal)

        return same_shape(handler, preceded(behaviour(handler), authenticate))
