"""dbmaint worker: a separate process that runs maintenance operations for the manager.

One module per concept; protobuf stays at the edge (``stream``), everything else works on plain types:

* ``config``      -- ``WorkerConfig`` and its parsing from flags and ``DBMAINT_*`` environment variables.
* ``cancel``      -- ``CancelToken`` and the interrupt plumbing (cancel request or deadline -> interrupt).
* ``faults``      -- ``DBMAINT_FAULTS`` fault injection used by tests (slow statements), announced in Hello.
* ``engines``     -- the ``Engine`` protocol, the registry by SQLAlchemy dialect, and the SQLite, PostgreSQL
                     and MariaDB/MySQL engines.
* ``targets``     -- binding configured target names to their URL and engine.
* ``executor``    -- assignment validation and running one operation in a slot thread.
* ``outbox``      -- results waiting to be written to a stream.
* ``backoff``     -- exponential reconnect backoff with jitter.
* ``stream``      -- the gRPC stream client (the only module that touches protobuf messages).
* ``worker``      -- the ``Worker``: connection loop, heartbeats, dispatch, drain.
* ``health``      -- the optional ``grpc.health.v1`` server.
* ``logs``        -- log formatting with worker/job context and URL masking.
* ``cli``         -- the ``dbmaint-worker`` entry point (the only place that installs signal handlers).
"""
