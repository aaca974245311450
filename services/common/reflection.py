"""Server reflection under both of its names, grpc.reflection.v1 and v1alpha.

Newer clients (grpcurl 1.9+, buf curl, Postman) ask for `grpc.reflection.v1.ServerReflection`
first; older ones only know v1alpha. grpcio-reflection serves only v1alpha, but the two
protocols are the same messages in two packages (v1 was v1alpha renamed when it became
stable), so one servicer answers both names. v1's file descriptor is v1alpha's renamed and
added to the default pool, the pool reflection answers from, so `describe` works on v1 too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serves reflection of service_names (and of itself, under both names) on server."""
    v1_file_descriptor()
    servicer = reflection.aio.ReflectionServicer([*service_names, *SERVICE_NAMES])
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)


def v1_file_descriptor() -> descriptor.FileDescriptor:
    """grpc/reflection/v1/reflection.proto in the default pool, added once."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(V1_FILE)
    except KeyError:  # not yet added, by us or by a grpcio-reflection that ships v1
        pass
    pool.Add(_renamed_to_v1(reflection_pb2.DESCRIPTOR))
    return pool.FindFileByName(V1_FILE)


def _renamed_to_v1(v1alpha: descriptor.FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's file as v1 declares it: same messages and fields, v1 package and options."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    for message in proto.message_type:  # none of them has nested messages
        for field in message.field:
            if field.HasField("type_name"):  # set on message fields only
                field.type_name = field.type_name.replace(old, new)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    proto.options.Clear()  # v1alpha's are deprecated = true and its own java/go names
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    return proto
