"""The TCP proxy test helper (tests/support/proxy.py): forwarding, cut, black hole, heal."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.polling import wait_for
from tests.support.proxy import TcpProxy


class EchoServer:
    """A loopback TCP server that echoes every byte back; counts the connections it accepted."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = 0
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_the_proxy_forwards_bytes_both_ways(echo: EchoServer) -> None:
    with TcpProxy(echo.address) as proxy, connect(proxy) as sock:
        assert exchange(sock, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB: more than one read, more than a socket buffer
        assert exchange(sock, big) == big
        assert proxy.accepted == 1 and proxy.open_connections == 1


def test_cut_closes_every_connection_on_both_sides(echo: EchoServer) -> None:
    with TcpProxy(echo.address) as proxy:
        first, second = connect(proxy), connect(proxy)
        assert exchange(first, b"a") == b"a" and exchange(second, b"b") == b"b"
        proxy.cut()
        assert proxy.open_connections == 0
        for sock in (first, second):
            with sock, pytest.raises(OSError):
                # A reset shows as ConnectionResetError; an EOF (b"") is turned into an error here too.
                if not sock.recv(1):
                    raise ConnectionResetError("EOF")
        # The proxy still forwards new connections after a cut.
        with connect(proxy) as again:
            assert exchange(again, b"c") == b"c"


def test_a_black_hole_drops_every_byte_silently_and_keeps_the_connection_open(echo: EchoServer) -> None:
    with TcpProxy(echo.address) as proxy, connect(proxy) as sock:
        assert exchange(sock, b"before") == b"before"
        received_before = echo.received
        proxy.blackhole()
        sock.sendall(b"lost" * 1000)  # the write succeeds: no error on the sender's side
        wait_for(lambda: proxy.dropped_bytes >= 4000, timeout=5, message="the proxy read and dropped the bytes")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing comes back, and no EOF or reset either
        assert echo.received == received_before
        assert proxy.open_connections == 1


def test_new_connections_are_black_holed_too_and_never_reach_the_target(echo: EchoServer) -> None:
    with TcpProxy(echo.address) as proxy:
        proxy.blackhole()
        with connect(proxy) as sock:
            sock.sendall(b"ping")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        assert echo.accepted == 0


def test_heal_forwards_new_connections_while_black_holed_ones_stay_dead_until_cut(echo: EchoServer) -> None:
    with TcpProxy(echo.address) as proxy:
        old = connect(proxy)
        proxy.blackhole()
        proxy.heal()
        with connect(proxy) as new:
            assert exchange(new, b"back") == b"back"
        old.sendall(b"still lost")
        old.settimeout(0.3)
        with pytest.raises(TimeoutError):
            old.recv(1)
        proxy.cut()
        old.settimeout(5)
        with old, pytest.raises(OSError):
            if not old.recv(1):
                raise ConnectionResetError("EOF")


def test_a_connection_to_a_target_that_is_down_is_closed_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        down = f"127.0.0.1:{placeholder.getsockname()[1]}"
    # The reset may even beat connect() returning, so connecting is inside pytest.raises too.
    with TcpProxy(down) as proxy, pytest.raises(OSError), connect(proxy) as sock:
        if not sock.recv(1):
            raise ConnectionResetError("EOF")


def test_close_is_idempotent_and_ends_open_connections(echo: EchoServer) -> None:
    proxy = TcpProxy(echo.address)
    sock = connect(proxy)
    assert exchange(sock, b"x") == b"x"
    proxy.close()
    proxy.close()
    with sock, pytest.raises(OSError):
        if not sock.recv(1):
            raise ConnectionResetError("EOF")
