"""A small async client for ``chimera.v1.JobService``, used by the CLI."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import grpc

from chimera.v1 import jobs_pb2 as pb
from chimera.v1 import jobs_pb2_grpc


class JobsClient:
    """Use as ``async with JobsClient("127.0.0.1:50051") as client: ...``.

    ``token`` is sent as ``authorization: Bearer TOKEN``; ``tls_ca`` (PEM bytes of
    the CA or self-signed certificate to trust) switches the channel to TLS.
    """

    def __init__(
        self,
        target: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        token: str | None = None,
        tls_ca: bytes | None = None,
    ) -> None:
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca)
            self._channel = grpc.aio.secure_channel(target, credentials)
        else:
            self._channel = grpc.aio.insecure_channel(target)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._metadata = tuple(metadata) + auth

    async def __aenter__(self) -> JobsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close(None)

    async def create(
        self,
        brief: str,
        teams: Sequence[pb.Team.ValueType] = (),
        job_id: str = "",
        request_id: str = "",
    ) -> pb.Job:
        request = pb.CreateJobRequest(
            brief=brief, teams=teams, job_id=job_id, request_id=request_id
        )
        response: pb.CreateJobResponse = await self._stub.CreateJob(
            request, metadata=self._metadata
        )
        return response.job

    async def get(
        self, job_id: str, view: pb.JobView.ValueType = pb.JOB_VIEW_UNSPECIFIED
    ) -> pb.Job:
        response: pb.GetJobResponse = await self._stub.GetJob(
            pb.GetJobRequest(job_id=job_id, view=view), metadata=self._metadata
        )
        return response.job

    async def list(
        self, page_size: int = 0, page_token: str = "",
        view: pb.JobView.ValueType = pb.JOB_VIEW_UNSPECIFIED,
    ) -> pb.ListJobsResponse:
        response: pb.ListJobsResponse = await self._stub.ListJobs(
            pb.ListJobsRequest(page_size=page_size, page_token=page_token, view=view),
            metadata=self._metadata,
        )
        return response

    async def cancel(self, job_id: str) -> pb.Job:
        response: pb.CancelJobResponse = await self._stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id), metadata=self._metadata
        )
        return response.job

    async def events(
        self, job_id: str, after_sequence: int = 0, epoch: str = ""
    ) -> AsyncGenerator[pb.JobEvent, None]:
        """The job's events after ``after_sequence``. ``epoch`` (``Job.epoch`` of the
        answer the position came from) makes the server refuse a position from
        another lifetime of its store (``OUT_OF_RANGE``) rather than stream
        another job that reuses the id."""
        call = self._stub.StreamJobEvents(
            pb.StreamJobEventsRequest(
                job_id=job_id, after_sequence=after_sequence, epoch=epoch
            ),
            metadata=self._metadata,
        )
        try:
            async for response in call:
                yield response.event
        finally:
            call.cancel()
