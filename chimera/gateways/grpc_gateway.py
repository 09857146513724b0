"""The gRPC gateway: ``chimera.v1.JobService``, reflection and health.

Chimera errors become gRPC status codes here, at the one boundary:
InvalidArgument → INVALID_ARGUMENT, NotFound → NOT_FOUND, AlreadyExists →
ALREADY_EXISTS, FailedPrecondition → FAILED_PRECONDITION, Unavailable →
UNAVAILABLE, SubscriberTooSlow and ResourceExhausted → RESOURCE_EXHAUSTED,
HistoryGone → OUT_OF_RANGE, Unauthenticated → UNAUTHENTICATED, PermissionDenied →
PERMISSION_DENIED (see :func:`aborting_on_error`). A StreamJobEvents stream ends
UNAUTHENTICATED ("token expired: …") when the token it was opened with expires.

:class:`chimera.auth.grpc_interceptor.AuthInterceptor` decides each JobService
call's principal once (verifying its token; it refuses a call without a valid
one when auth is on); each method reads it with ``call_principal()`` and
passes it to the job manager explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in grpc-stubs

from chimera.actors.broadcaster import Broadcaster
from chimera.actors.jobs import JobManager, JobRequest
from chimera.auth.grpc_interceptor import AuthInterceptor, call_principal
from chimera.defaults import MAX_MESSAGE_BYTES, ConnectionLimits
from chimera.errors import (
    ChimeraError,
    code_name,
)
from chimera.gateways.convert import event_to_pb, job_to_pb, teams_from_pb, view_from_pb
from chimera.gateways.expiry import end_at_expiry
from chimera.gateways.limits import SubscriberLimits, peer_host
from chimera.gateways.reflection import enable_reflection
from chimera.gateways.serving import Serving
from chimera.grpc_handlers import (
    Handler,
    HandlerInterceptor,
    behaviour,
    grpc_type,
    preceded,
    same_shape,
)
from chimera.observability.grpc_metrics import MetricsInterceptor
from chimera.observability.metrics import Deliveries
from chimera.v1 import jobs_pb2 as pb
from chimera.v1 import jobs_pb2_grpc
from chimera.wire import decode_page_token, encode_page_token

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobService"].full_name
MAX_PENDING_CALLS = 10_000

def status_code(error: ChimeraError) -> grpc.StatusCode:
    return grpc.StatusCode[code_name(error)]


@contextlib.asynccontextmanager
async def aborting_on_error(
    context: grpc.aio.ServicerContext[object, object],
) -> AsyncIterator[None]:
    """Ends the call with the status and message of a :class:`ChimeraError` raised inside;
    anything else is a bug: logged, and INTERNAL (never grpc's UNKNOWN "Unexpected …")."""
    try:
        yield
    except ChimeraError as exc:
        await context.abort(status_code(exc), str(exc))
    except grpc.aio.AbortError:
        raise
    except Exception:
        log.exception("internal error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error: see the server's log")


class _Undecodable:
    """What a request that is not valid protobuf decodes to (see :class:`DecodeGuard`);
    ``field``: the string field that is not UTF-8, when that is what is wrong."""

    __slots__ = ("error", "field")

    def __init__(self, error: DecodeError, field: str | None) -> None:
        self.error = error
        self.field = field

    def message(self) -> str:
        if self.field is not None:
            return (
                f"the request could not be decoded as protobuf: {self.field} is not "
                "valid UTF-8 text: send strings as UTF-8"
            )
        return (
            f"the request could not be decoded as protobuf ({self.error}): "
            "send a well-formed message (strings must be UTF-8)"
        )


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; IndexError if cut short."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def bad_utf8_field(message_type: object, data: bytes) -> str | None:
    """The name of the first top-level string field of ``data`` that is not UTF-8,
    or None: upb only says "String field had bad UTF-8", and a client should be
    told which field to fix. (Chimera's requests have no nested messages.)"""
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    if descriptor is None:
        return None
    position = 0
    try:
        while position < len(data):
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                value, position = data[position:position + length], position + length
                field = descriptor.fields_by_number.get(number)
                if field is not None and field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        value.decode("utf-8")  # strict: refuses encoded surrogates too
                    except UnicodeDecodeError:
                        name: str = field.name
                        return name
            else:
                return None
    except IndexError:
        return None
    return None


class DecodeGuard(HandlerInterceptor):
    """Answers INVALID_ARGUMENT to a request that is not valid protobuf (truncated,
    invalid UTF-8 in a string: the message names that field), which grpc would
    report as UNKNOWN "Unexpected DecodeError": the deserializer hands a marker
    over instead of raising, and the method is replaced by a refusal when it
    receives one."""

    def intercept_handler(self, handler: Handler, method: str) -> Handler:
        if handler.request_deserializer is None:
            return handler
        if grpc_type(handler) not in ("unary", "server_stream"):
            return handler  # no streaming requests in this API
        decode = handler.request_deserializer
        # The generated handlers' deserializer is the request class's FromString.
        message_type = getattr(decode, "__self__", None)

        def deserialize(data: bytes) -> Any:
            try:
                return decode(data)
            except DecodeError as exc:
                return _Undecodable(exc, bad_utf8_field(message_type, data))

        async def refuse_undecodable(request: Any, context: Any) -> None:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())

        return same_shape(
            handler,
            preceded(behaviour(handler), refuse_undecodable),
            request_deserializer=deserialize,
        )


class JobService(jobs_pb2_grpc.JobServiceServicer):
    """The servicer; each method translates, calls the job manager, translates back."""

    def __init__(
        self,
        jobs: JobManager,
        broadcaster: Broadcaster,
        limits: SubscriberLimits,
        deliveries: Deliveries | None = None,
    ) -> None:
        """Serves behind :class:`AuthInterceptor`, which decides each call's principal."""
        self._jobs = jobs
        self._broadcaster = broadcaster
        self._limits = limits
        self._deliveries = deliveries

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CreateJobResponse:
        async with aborting_on_error(context):
            job = await self._jobs.create(
                JobRequest(
                    brief=request.brief,
                    teams=teams_from_pb(list(request.teams)),
                    job_id=request.job_id,
                    request_id=request.request_id,
                ),
                principal=call_principal(),
                caller=peer_host(context.peer()),
            )
        # After: creating the job is what moves a store that lost its data on to
        # its new epoch, and the job belongs to that one.
        return pb.CreateJobResponse(job=job_to_pb(job, self._jobs.epoch))

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetJobResponse:
        epoch = self._jobs.epoch  # before the job: see JobManager.epoch
        async with aborting_on_error(context):
            job = await self._jobs.get(
                request.job_id, principal=call_principal(),
                view=view_from_pb(request.view),
            )
        return pb.GetJobResponse(job=job_to_pb(job, epoch))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListJobsResponse:
        epoch = self._jobs.epoch
        async with aborting_on_error(context):
            principal, view = call_principal(), view_from_pb(request.view)
            self._jobs.authorize_list(principal=principal)  # before parsing the token
            jobs, cursor = await self._jobs.list(
                request.page_size, decode_page_token(request.page_token),
                principal=principal, view=view,
            )
        return pb.ListJobsResponse(
            jobs=[job_to_pb(j, epoch) for j in jobs], next_page_token=encode_page_token(cursor)
        )

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CancelJobResponse:
        epoch = self._jobs.epoch
        async with aborting_on_error(context):
            job = await self._jobs.cancel(request.job_id, principal=call_principal())
        return pb.CancelJobResponse(job=job_to_pb(job, epoch))

    async def StreamJobEvents(
        self,
        request: pb.StreamJobEventsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[pb.StreamJobEventsResponse]:
        """History after ``after_sequence``, then live events; ends after the final event.

        The rule is :meth:`JobManager.watch`'s, shared with the WebSocket: an
        unknown job at 0 is waited for; resuming one this server does not keep
        is OUT_OF_RANGE (history gone), not NOT_FOUND, so a client can tell a
        gap it cannot fill from a typo; so is an ``epoch`` other than the
        store's current one (the position is from a lifetime of the store that
        ended: the id may name another job now).
        """
        async with aborting_on_error(context):
            principal = call_principal()
            subscription = await self._jobs.watch(
                request.job_id, request.after_sequence, principal=principal,
                epoch=request.epoch, deltas=not request.exclude_code_deltas,
            )
            async with subscription:
                # The stream ends UNAUTHENTICATED when the token expires.
                expiry = end_at_expiry(subscription, principal)
                try:
                    with self._limits.hold(request.job_id, peer_host(context.peer())):
                        async for event in subscription:
                            yield pb.StreamJobEventsResponse(event=event_to_pb(event))
                            if self._deliveries is not None:
                                self._deliveries.delivered(event)
                finally:
                    if expiry is not None:
                        expiry.cancel()


class GrpcGateway:
    """The grpc.aio server with JobService, reflection and health.

    Lifecycle: :meth:`start` binds and serves; :meth:`enter_shutdown` sets health
    to NOT_SERVING for good; :meth:`stop` stops the server with a grace period
    during which in-flight calls finish (streams end when the broadcaster closes
    them).

    The health service follows the server's :class:`Health` (subscribed to here,
    once): SERVING while it is ready, NOT_SERVING while it is not.
    """

    def __init__(
        self,
        serving: Serving,
        *,
        max_request_bytes: int = MAX_MESSAGE_BYTES,
        tls: tuple[bytes, bytes] | None = None,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        """``tls`` is ``(private key PEM, certificate chain PEM)``; without it, plaintext."""
        timing = connection_limits or ConnectionLimits()
        self._server = grpc.aio.server(
            # Metrics first: it counts what the others refuse too.
            interceptors=[
                MetricsInterceptor(),
                DecodeGuard(),
                AuthInterceptor(serving.authenticator, SERVICE_NAME),
            ],
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.so_reuseport", 1 if serving.reuse_port else 0),
                # Calls grpc's core holds before this server takes them: at its
                # default (1,000) a burst of concurrent calls got CANCELLED with no
                # reason (about 5% of 1,500 CreateJob on one channel).
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
                # Half-open connections: one that has not finished its HTTP/2 (and TLS)
                # handshake in time is closed; one with calls open is pinged and
                # closed if the ping is not answered; one with none, after `idle`.
                ("grpc.server_handshake_timeout_ms", int(timing.handshake * 1000)),
                ("grpc.keepalive_time_ms", int(timing.keepalive * 1000)),
                ("grpc.keepalive_timeout_ms", int(timing.keepalive_timeout * 1000)),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.max_connection_idle_ms", int(timing.idle * 1000)),
            ],
        )
        self._tls = tls
        self._reuse_port = serving.reuse_port
        servicer = JobService(
            serving.jobs, serving.broadcaster, serving.limits, serving.deliveries
        )
        jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, self._server)
        self._health_service = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health_service, self._server)
        self._health = serving.health
        self._health.subscribe(self._follow_health)
        enable_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
            self._server,
        )
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if port:
            # grpc only says "Failed to bind" (and logs a C-core line): find out why first.
            socket.create_server((host.strip("[]"), port), reuse_port=self._reuse_port).close()
        try:
            if self._tls is not None:
                credentials = grpc.ssl_server_credentials([self._tls])
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await self._server.start()
        await self._follow_health(self._health.ready, self._health.reason)
        return self.port

    async def _follow_health(self, ready: bool, reason: str) -> None:
        """Health SERVING or NOT_SERVING (e.g. while the shared store is unreachable);
        ignored once :meth:`enter_shutdown` has run."""
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self._health_service.set(name, status)

    async def enter_shutdown(self) -> None:
        """Health NOT_SERVING, so balancers stop sending new calls."""
        await self._health_service.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)
