"""Generated protobuf and gRPC code for ``protos/dbmaint/v1``; regenerate with ``python protos/generate.py``."""
