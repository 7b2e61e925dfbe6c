"""Credentials both sides share: bearer tokens read from the environment (never from the command line), the
metadata a client sends them in, and the TLS files a channel or a listener is built from.

A secret named ``NAME`` is read from the variable ``NAME`` or from the file that ``NAME_FILE`` names (the form
Docker and Kubernetes secrets take); setting both is an error, so nobody wonders which one won.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dbmaint.parsers import token_list

AUTHORIZATION = "authorization"
BEARER_PREFIX = "Bearer "


class CredentialError(ValueError):
    """A credential setting cannot be used (both forms set, an unreadable file, an empty token)."""


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """The value of ``name`` or the stripped content of the file ``name``_FILE names; None when neither is set."""
    direct = environ.get(name, "")
    file_name = environ.get(f"{name}_FILE", "")
    if direct and file_name:
        raise CredentialError(f"set {name} or {name}_FILE, not both")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise CredentialError(f"{name}_FILE: cannot read {file_name}: {exc.strerror or exc}") from None
    return direct.strip() or None


def read_token_list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Tokens separated by commas or new lines (several, so they can be rotated) from ``name`` or ``name``_FILE."""
    text = read_secret(environ, name) or ""
    try:
        return token_list(text)
    except ValueError as error:
        raise CredentialError(f"{name}: {error}") from None


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents ``token`` (none without a token)."""
    return ((AUTHORIZATION, BEARER_PREFIX + token),) if token else ()


def aio_channel(address: str, tls: TlsFiles | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A channel to ``address``: TLS when ``tls`` is given, plaintext otherwise."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=list(options))


def sync_channel(address: str, tls: TlsFiles | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.channel_credentials(), options=list(options))


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one side of a TLS connection. For a listener: its certificate and key, and the CA that client
    certificates must chain to (mTLS; None: no client certificate asked). For a client: the CA the server's
    certificate must chain to (None: the system roots), and its own certificate and key for mTLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @staticmethod
    def from_settings(ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
        """None when no file is given; an error when a certificate comes without its key or the reverse."""
        if not (ca or cert or key):
            return None
        if bool(cert) != bool(key):
            raise CredentialError("a TLS certificate and its key go together: give both or neither")
        for path in (ca, cert, key):
            if path and not os.path.isfile(path):
                raise CredentialError(f"TLS file not found: {path}")
        return TlsFiles(Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None)

    def _read(self, path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca),
            private_key=self._read(self.key),
            certificate_chain=self._read(self.cert),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        if self.cert is None or self.key is None:
            raise CredentialError("a TLS listener needs a certificate and its key")
        client_ca = self._read(self.ca)
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """How the CLI reaches the manager: TLS files (None: plaintext) and the bearer token it sends."""

    tls: TlsFiles | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token)
