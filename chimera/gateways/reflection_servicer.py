"""The reflection servicer (:mod:`chimera.gateways.reflection` loads it on the first call).

grpcio-reflection (1.85) implements only ``grpc.reflection.v1alpha``; the v1 service
(``grpc.reflection.v1.ServerReflection``, what newer clients ask first) has the same
messages with the same field numbers, so the same servicer answers both names.

A ``_pb2`` module keeps no source code info, so files read back from a descriptor
pool have no comments and ``grpcurl describe`` showed none. ``scripts/gen_protos``
also writes ``chimera/v1/descriptors.binpb`` (``protoc --include_source_info``): the
files served carry its source code info, so the comments are there.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf import timestamp_pb2 as _timestamp_pb2  # jobs.proto imports it
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from chimera.grpc_handlers import Handler
from chimera.v1 import jobs_pb2

_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _proto_of(file: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def source_files(pool: descriptor_pool.DescriptorPool) -> dict[str, bytes]:
    """The files of ``chimera/v1/descriptors.binpb``, serialized, by name: each as
    ``pool`` has it plus the set's source code info (its comments). Only the comments
    are taken: protoc's set also fills in ``json_name``, which would change the JSON
    field names grpcurl prints."""
    data = resources.files("chimera.v1").joinpath("descriptors.binpb").read_bytes()
    files = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        proto = _proto_of(pool.FindFileByName(file.name))
        proto.source_code_info.CopyFrom(file.source_code_info)
        files[file.name] = proto.SerializeToString()
    return files


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection proto: v1alpha's, under the v1 package and file name."""
    proto = _proto_of(reflection_pb2.DESCRIPTOR)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return proto


def _pool() -> descriptor_pool.DescriptorPool:
    """A pool of its own (not the process's default one) with every file served."""
    pool = descriptor_pool.DescriptorPool()
    for module in (_timestamp_pb2, jobs_pb2, health_pb2, reflection_pb2):
        pool.Add(_proto_of(module.DESCRIPTOR))
    pool.Add(_v1_reflection_file())
    return pool


class _Servicer(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    """grpcio-reflection's servicer, answering with the files of :func:`source_files`
    (the same, with their comments) where it has them."""

    def __init__(self, service_names: Iterable[str]) -> None:
        pool = _pool()
        super().__init__(service_names, pool=pool)
        self._sources = source_files(pool)

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                files = response.file_descriptor_response.file_descriptor_proto
                for i, raw in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                    if name in self._sources:
                        files[i] = self._sources[name]
            yield response


def method_handler(service_names: Iterable[str]) -> Handler:
    """The ``ServerReflectionInfo`` handler (v1 and v1alpha alike) for ``service_names``."""
    servicer = _Servicer(service_names)
    return grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
