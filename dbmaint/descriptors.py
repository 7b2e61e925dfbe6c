"""The .proto files as FileDescriptorProtos *with* their comments, for server reflection.

Generated ``_pb2`` modules drop comments; ``protos/generate.py`` also writes ``descriptor_set.binpb`` with
source info, so `grpcurl describe` can show every documented service, message and field.
"""

from __future__ import annotations

import functools
from importlib import resources

from google.protobuf import descriptor_pb2

DESCRIPTOR_SET = "descriptor_set.binpb"


@functools.cache
def commented_file_protos() -> dict[str, bytes]:
    """File name (e.g. ``dbmaint/v1/maintenance.proto``) -> serialized FileDescriptorProto with comments."""
    data = (resources.files("dbmaint.v1") / DESCRIPTOR_SET).read_bytes()
    file_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {file.name: file.SerializeToString() for file in file_set.file if file.name.startswith("dbmaint/")}
