"""gRPC transport settings shared by the manager (server), the worker and the CLI (clients): one place for the
message size limit and the keepalive policy, so the two ends cannot drift apart.

Keepalive, both ways, so a half-open link (bytes silently dropped, no reset) ends a stream within
KEEPALIVE_TIME + KEEPALIVE_TIMEOUT (10 s) instead of when the kernel gives up on unacknowledged data (minutes):

* each side pings a connection after KEEPALIVE_TIME_MS without reading from it and drops it when the ping is
  not answered within KEEPALIVE_TIMEOUT_MS, however long it has carried no data (an idle stream);
* ``grpc.http2.ping_timeout_ms`` is what actually ends the transport on an unanswered ping (gRPC core's own
  default is a minute, whatever ``grpc.keepalive_timeout_ms`` says);
* the server admits a client ping every MIN_PING_INTERVAL_MS, data or not: well below the clients'
  KEEPALIVE_TIME_MS, with room for timer jitter. More frequent pings are strikes; past MAX_PING_STRIKES the
  client gets GOAWAY ENHANCE_YOUR_CALM ("too_many_pings").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# A parent with many children can exceed gRPC's default 4 MiB: the manager sends and takes up to this.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
KEEPALIVE_TIME_MS = 5_000
KEEPALIVE_TIMEOUT_MS = 5_000
MIN_PING_INTERVAL_MS = 2_000
MAX_PING_STRIKES = 2

_MESSAGE_SIZES: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
_KEEPALIVE: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    # Ping however long the link has carried no data: a black hole is exactly that case.
    ("grpc.http2.max_pings_without_data", 0),
)

SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    *_MESSAGE_SIZES,
    *_KEEPALIVE,
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
)
# The worker: a long-lived stream that must notice a dead link, and reconnect quickly.
STREAM_CLIENT_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    *_MESSAGE_SIZES,
    *_KEEPALIVE,
)
# The CLI: short calls (and a watch stream); it reads the largest answers the manager sends.
CLIENT_OPTIONS: Sequence[tuple[str, Any]] = _MESSAGE_SIZES

# Trailing metadata of a standby's UNAVAILABLE refusal: the address the leader advertises (``--advertise``), sent
# while its store lease is alive. Clients and workers follow it to the leader; absent, nobody is known to lead.
LEADER_METADATA_KEY = "dbmaint-leader"
# Trailing metadata of an UNAVAILABLE that a manager sent before doing anything (a standby's or a starting
# manager's refusal, a lost lease, an unreachable store): the call was not carried out, so a client may send it
# to another manager. Its absence proves nothing either way (a COMMIT that was cut may have committed).
NOT_RUN_METADATA_KEY = "dbmaint-not-run"
