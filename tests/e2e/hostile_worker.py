"""A hostile worker for the end-to-end tests: a small gRPC client, not the real worker.

    python -m tests.e2e.hostile_worker --manager HOST:PORT --worker-id ID --target NAME [--error TEXT]

``--worker-id`` and ``--error`` take Python escapes (``\\x00``: a command line cannot carry a NUL itself). It
sends a Hello; for every assignment it answers a FAILED result whose error, engine and notes are ``--error``;
it prints one line per event (``welcome``, ``result <job id>``, ``ended <STATUS> <details>``) and keeps the
stream open until the manager ends it or the process is killed.
"""

from __future__ import annotations

import argparse
import codecs
import queue

import grpc

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc


def _unescape(text: str) -> str:
    return codecs.decode(text, "unicode_escape")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manager", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--error", default="")
    args = parser.parse_args()
    error = _unescape(args.error)

    requests: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
    hello = pb.Hello(worker_id=_unescape(args.worker_id), targets=[args.target], slots=1, version="hostile")
    requests.put(pb.WorkerMessage(hello=hello))
    with grpc.insecure_channel(args.manager) as channel:
        stream = pb_grpc.WorkerServiceStub(channel).Connect(iter(requests.get, None))  # type: ignore[no-untyped-call]
        try:
            for message in stream:
                kind = message.WhichOneof("kind")
                if kind == "welcome":
                    print("welcome", flush=True)
                elif kind == "assignment":
                    assignment = message.assignment
                    result = pb.Result(
                        job_id=assignment.job_id,
                        attempt=assignment.attempt,
                        status=pb.JOB_STATUS_FAILED,
                        error=error,
                        result=pb.OperationResult(engine=error, notes=[error]),
                    )
                    requests.put(pb.WorkerMessage(result=result))
                    print("result", assignment.job_id, flush=True)
            print("ended OK", flush=True)
        except grpc.RpcError as failure:
            print("ended", failure.code().name, failure.details(), flush=True)  # type: ignore[attr-defined]
        finally:
            requests.put(None)


if __name__ == "__main__":
    main()
