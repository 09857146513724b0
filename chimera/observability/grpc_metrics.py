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
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from chimera.grpc_handlers import Handler, HandlerInterceptor, behaviour, grpc_type, same_shape
from chimera.observability.logs import log_context
from chimera.observability.metrics import GRPC_HANDLED, GRPC_HANDLING, GRPC_STARTED

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]
else:  # generic only in the type stubs
    _Context = grpc.aio.ServicerContext


class MetricsInterceptor(HandlerInterceptor):
    """Counts each call to a known method (an unknown one, which grpc answers
    UNIMPLEMENTED, is not counted)."""

    def intercept_handler(self, handler: Handler, method: str) -> Handler:
        service, _, name = method.lstrip("/").rpartition("/")
        return _measured(handler, _Labelled(grpc_type(handler), service, name))


class _Labelled:
    """One method's series, labelled once: ``labels()`` (a lock and a dict lookup
    per series) is not paid again on every call."""

    __slots__ = ("_handled", "handling", "labels", "started")

    def __init__(self, kind: str, service: str, method: str) -> None:
        self.labels = (kind, service, method)
        self.started = GRPC_STARTED.labels(*self.labels)
        self.handling = GRPC_HANDLING.labels(*self.labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_HANDLED.labels(*self.labels, code.name)
        return child


class _Call:
    """One call's labels and clock, from its start to its end (the ``with`` block):
    counted as started, then handled with the status it ends with."""

    __slots__ = ("context", "series", "started")

    def __init__(self, series: _Labelled, context: _Context) -> None:
        self.context = context
        self.series = series
        self.started = time.perf_counter()
        series.started.inc()
        log_context(peer=context.peer())

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        series = self.series
        series.handled(_code(self.context, error)).inc()
        series.handling.observe(time.perf_counter() - self.started)


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


def _measured(handler: Handler, series: _Labelled) -> Handler:
    """``handler`` with the same shape, counted."""
    behavior = behaviour(handler)
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: _Context) -> AsyncIterator[Any]:
            with _Call(series, context):
                async for response in behavior(request, context):
                    yield response

        wrapped = streaming
    else:

        async def returning(request: Any, context: _Context) -> Any:
            with _Call(series, context):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        wrapped = returning
    return same_shape(handler, wrapped)
