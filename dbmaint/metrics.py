"""The Prometheus endpoint both services share: one registry per process (not the library's global one, so
several managers in one test process do not collide) served over HTTP on ``--metrics-listen``."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServerError(Exception):
    """The metrics port cannot be opened."""


def serve_metrics(listen: str, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``registry`` at http://HOST:PORT/metrics on a background thread; ``server_port`` is the bound port,
    ``shutdown()`` stops it."""
    host, _, port_text = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port_text), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    except (OSError, ValueError) as error:
        raise MetricsServerError(f"cannot serve metrics on {listen}: {error}") from None
    return server
