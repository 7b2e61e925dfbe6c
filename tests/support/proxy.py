"""A TCP proxy for tests that need a bad network between two real processes.

``TcpProxy(target)`` listens on a free loopback port (``proxy.address``) and forwards every connection to
``target`` ("host:port"). Point a client at ``proxy.address`` instead of the server, then break the link::

    with TcpProxy(cluster.address) as proxy:
        worker = cluster.start_worker("w1", targets, "--manager", proxy.address)
        proxy.blackhole()   # half-open: both sides keep their connection, every byte is silently dropped
        proxy.cut()         # close every connection now: both sides see a reset (or EOF)
        proxy.heal()        # forward again: new connections reach the target
        proxy.switch(other) # new connections go to another server; open ones are cut (a failover)

The three ways a link behaves:

* **forwarding** (the start, and after ``heal``): new connections are connected to the target and bytes flow.
* **black hole** (``blackhole``): every open connection, and every connection accepted from now on, has each
  byte read and thrown away in both directions. No side sees an error: writes succeed, nothing arrives, as
  when a router between them died. New connections are accepted but never reach the target.
* **cut** (``cut``): a one-off, not a mode. Every open connection is closed with a TCP reset on both sides.
  Connections accepted afterwards behave as the current mode says.

A black-holed connection stays black-holed after ``heal`` (the mode applies to new connections; a real half-open
link does not come back either): ``cut`` it, or let the peers' keepalive notice it. ``heal`` does not close it.

Every command returns once the proxy's thread carried it out, so ``cut()`` followed by an assertion sees the
connections closed. Counters (``accepted``, ``open_connections``, ``dropped_bytes``) let a test wait for a
reconnect or for traffic without sleeping. One thread runs the whole proxy (a selector over non-blocking
sockets); ``close`` (or leaving the ``with`` block) stops it and closes everything.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0


@dataclass(eq=False)
class _Link:
    """One proxied connection: the accepted socket and (when forwarding) the socket to the target."""

    client: socket.socket
    upstream: socket.socket | None
    blackholed: bool
    # Bytes read from one side, waiting to be written to the other: keyed by the socket they go to.
    outgoing: dict[socket.socket, bytearray] = field(default_factory=dict)

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]

    def peer(self, sock: socket.socket) -> socket.socket | None:
        return self.upstream if sock is self.client else self.client


def _parse(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host or "127.0.0.1", int(port)


class TcpProxy:
    """Forwards loopback connections to ``target``; can cut or black-hole them (see the module docstring)."""

    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        self.target = target
        self._target = _parse(target)
        self._listener = socket.create_server((host, 0))
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._commands_lock = threading.Lock()
        self._links: set[_Link] = set()
        self._blackhole = False
        self._stopping = False
        self.accepted = 0
        self.dropped_bytes = 0
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """Where clients connect: ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self._call(lambda: len(self._links))

    # -- commands (any thread) ------------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection now with a reset on both sides. The mode is unchanged."""
        self._call(self._cut_all)

    def blackhole(self) -> None:
        """Drop every byte of every open and future connection, in both directions, without closing any."""
        self._call(self._start_blackhole)

    def heal(self) -> None:
        """Forward new connections to the target again (black-holed open connections stay black-holed)."""
        self._call(self._stop_blackhole)

    def switch(self, target: str) -> None:
        """Forward new connections to another ``target`` and cut the open ones, as a failover between two
        servers does: clients pointed at the proxy follow the test's choice."""

        def retarget() -> None:
            self.target = target
            self._target = _parse(target)
            self._cut_all()

        self._call(retarget)

    def close(self) -> None:
        """Stop the proxy: close every connection and the listening socket (idempotent)."""
        if not self._thread.is_alive():
            return
        self._call(self._stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the proxy's thread did not stop"

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, command: Callable[[], T]) -> T:
        """Run ``command`` on the proxy's thread and return its result (the proxy's state is the thread's)."""
        box: list[T] = []
        done = threading.Event()
        with self._commands_lock:
            self._commands.append((lambda: box.append(command()), done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("the proxy's thread did not answer within 10s")
        return box[0]

    # -- the proxy's thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._selector.select(timeout=1.0):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._run_commands()
                    else:
                        link, sock = key.data
                        if mask & selectors.EVENT_WRITE:
                            self._write(link, sock)
                        if mask & selectors.EVENT_READ and link in self._links:
                            self._read(link, sock)
        finally:
            self._close_all(reset=True)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(_CHUNK):
                pass
        with self._commands_lock:
            commands, self._commands = self._commands, []
        for command, done in commands:
            try:
                command()
            finally:
                done.set()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        upstream = None
        if not self._blackhole:
            try:
                upstream = socket.create_connection(self._target, timeout=_CONNECT_TIMEOUT)
            except OSError:
                _reset(client)  # the target is down: the client sees its connection refused-ish
                return
        link = _Link(client, upstream, blackholed=self._blackhole)
        self._links.add(link)
        for sock in link.sockets():
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ, (link, sock))

    def _read(self, link: _Link, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._close(link, reset=True)
            return
        if not data:
            self._close(link, reset=False)  # one side closed: close the other, as the network would show it
            return
        peer = link.peer(sock)
        if link.blackholed or peer is None:
            self.dropped_bytes += len(data)
            return
        link.outgoing.setdefault(peer, bytearray()).extend(data)
        self._write(link, peer)

    def _write(self, link: _Link, sock: socket.socket) -> None:
        buffer = link.outgoing.get(sock)
        if buffer:
            try:
                sent = sock.send(buffer)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(link, reset=True)
                return
            del buffer[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if buffer else 0)
        self._selector.modify(sock, events, (link, sock))

    def _close(self, link: _Link, *, reset: bool) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        for sock in link.sockets():
            self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()

    def _close_all(self, *, reset: bool) -> None:
        for link in list(self._links):
            self._close(link, reset=reset)

    def _cut_all(self) -> None:
        self._close_all(reset=True)

    def _start_blackhole(self) -> None:
        self._blackhole = True
        for link in self._links:
            link.blackholed = True
            link.outgoing.clear()  # what was still in flight is lost too
            for sock in link.sockets():
                self._selector.modify(sock, selectors.EVENT_READ, (link, sock))

    def _stop_blackhole(self) -> None:
        self._blackhole = False

    def _stop(self) -> None:
        self._stopping = True


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than an orderly FIN: an abrupt end, as a cut cable."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
