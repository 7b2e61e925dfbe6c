"""Server reflection that keeps the .proto comments, so `grpcurl describe` documents the API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from dbmaint.descriptors import commented_file_protos


class CommentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """The stock servicer rebuilds files with CopyToProto, which drops comments; swap in our originals."""

    def _with_comments(self, response: Any) -> Any:
        if response.HasField("file_descriptor_response"):
            originals = commented_file_protos()
            files = response.file_descriptor_response.file_descriptor_proto
            for index, raw in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                if name in originals:
                    files[index] = originals[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return self._with_comments(super()._file_containing_symbol(request, fully_qualified_name))

    def _file_containing_extension(self, request: Any, containing_type: str, extension_number: int) -> Any:
        return self._with_comments(super()._file_containing_extension(request, containing_type, extension_number))


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(CommentedReflectionServicer(names), server)


__all__ = ["enable_reflection", "reflection_pb2"]
