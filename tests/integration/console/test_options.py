"""The console's options: off by default, its listener and TLS files, the read-only tokens, and the refusal to
serve a non-loopback console without tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbmaint.config import ConfigError
from manager_service.auth import Role
from manager_service.config import parse_config


def test_the_console_is_off_by_default() -> None:
    config = parse_config([], {})
    assert config.http_listen == ""
    assert config.http_tls is None


def test_the_listen_address_comes_from_the_flag_or_the_variable() -> None:
    assert parse_config(["--http-listen", "127.0.0.1:8080"], {}).http_listen == "127.0.0.1:8080"
    assert parse_config([], {"DBMAINT_HTTP_LISTEN": "localhost:0"}).http_listen == "localhost:0"


def test_readonly_tokens_come_from_the_variable_or_its_file(tmp_path: Path) -> None:
    config = parse_config([], {"DBMAINT_READONLY_TOKENS": "look-1,look-2"})
    assert config.auth.role_of("look-2") is Role.READONLY
    tokens = tmp_path / "readonly"
    tokens.write_text("look-3\n")
    config = parse_config([], {"DBMAINT_READONLY_TOKENS_FILE": str(tokens)})
    assert config.auth.role_of("look-3") is Role.READONLY


def test_a_non_loopback_console_without_tokens_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="DBMAINT_CLIENT_TOKENS"):
        parse_config(["--http-listen", "0.0.0.0:8080"], {})
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1"):
        parse_config(["--http-listen", "10.1.2.3:8080"], {})


def test_a_non_loopback_console_with_tokens_may_start() -> None:
    config = parse_config(["--http-listen", "0.0.0.0:8080"], {"DBMAINT_READONLY_TOKENS": "look"})
    assert config.http_listen == "0.0.0.0:8080"


def test_the_console_uses_the_manager_s_certificate_unless_it_has_its_own(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "own-cert", "own-key")}
    for path in files.values():
        path.write_text("-")
    shared = ["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"])]
    assert parse_config(shared, {}).http_tls == (str(files["cert"]), str(files["key"]))
    own = ["--http-tls-cert", str(files["own-cert"]), "--http-tls-key", str(files["own-key"])]
    assert parse_config(shared + own, {}).http_tls == (str(files["own-cert"]), str(files["own-key"]))


def test_a_console_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="go together"):
        parse_config(["--http-tls-cert", "cert.pem"], {})
