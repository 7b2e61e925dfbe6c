from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from worker_service import cli
from worker_service.config import DEFAULT_MANAGERS, ConfigError, WorkerConfig, parse_config


def test_flags() -> None:
    config = parse_config(
        [
            "--manager", "manager.example:6000",
            "--target", "orders=sqlite:////data/orders.db",
            "--target", "users.v2=postgresql://u:pw@db/users",
            "--slots", "3",
            "--worker-id", "w-1",
            "--grace", "12.5",
            "--health-listen", "0.0.0.0:8081",
            "--log-level", "debug",
        ],
        environ={},
    )  # fmt: skip
    assert config.managers == ("manager.example:6000",)
    assert config.target_names == ("orders", "users.v2")
    assert config.targets[0].url.database == "/data/orders.db"
    assert config.targets[1].url.get_backend_name() == "postgresql"
    assert (config.slots, config.worker_id, config.grace) == (3, "w-1", 12.5)
    assert config.health_listen == "0.0.0.0:8081"
    assert config.log_level == "DEBUG"


def test_environment_variables() -> None:
    env = {
        "DBMAINT_MANAGER": "10.0.0.1:7000",
        "DBMAINT_TARGETS": " a=sqlite:///a.db\n\tb=sqlite:///b.db  ",
        "DBMAINT_SLOTS": "2",
        "DBMAINT_WORKER_ID": "from-env",
        "DBMAINT_GRACE": "0",
        "DBMAINT_HEALTH_LISTEN": "127.0.0.1:0",
        "DBMAINT_LOG_LEVEL": "warning",
    }
    config = parse_config([], environ=env)
    assert config.managers == ("10.0.0.1:7000",)
    assert config.target_names == ("a", "b")
    assert (config.slots, config.worker_id, config.grace) == (2, "from-env", 0.0)
    assert config.health_listen == "127.0.0.1:0"
    assert config.log_level == "WARNING"


def test_flags_win_over_environment_and_target_flags_replace_the_list() -> None:
    env = {"DBMAINT_TARGETS": "a=sqlite:///a.db b=sqlite:///b.db", "DBMAINT_SLOTS": "4"}
    config = parse_config(["--target", "c=sqlite:///c.db", "--slots", "1"], environ=env)
    assert config.target_names == ("c",)
    assert config.slots == 1


def test_defaults() -> None:
    config = parse_config(["--target", "a=sqlite:///a.db"], environ={})
    assert config.managers == DEFAULT_MANAGERS == ("127.0.0.1:50051",)
    assert (config.slots, config.grace, config.health_listen, config.log_level) == (1, 60.0, "", "INFO")
    assert config.worker_id == f"{socket.gethostname()}-{os.getpid()}"


def test_manager_accepts_grpc_target_schemes() -> None:
    config = parse_config(["--target", "a=sqlite:///a.db", "--manager", "dns:///manager:50051"], environ={})
    assert config.managers == ("dns:///manager:50051",)
    ipv6 = parse_config(["--target", "a=sqlite:///a.db", "--manager", "[::1]:50051"], environ={})
    assert ipv6.managers == ("[::1]:50051",)


def test_several_managers_are_comma_separated_and_keep_their_order() -> None:
    flag = parse_config(["--target", "a=sqlite:///a.db", "--manager", "b:50051, a:50051"], environ={})
    assert flag.managers == ("b:50051", "a:50051")
    variable = parse_config(["--target", "a=sqlite:///a.db"], environ={"DBMAINT_MANAGER": "m1:1,dns:///m2:2"})
    assert variable.managers == ("m1:1", "dns:///m2:2")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, "no target configured"),
        (["--target=-bad=sqlite:///x.db"], {}, "target name '-bad' is invalid"),
        (["--target", "has space=sqlite:///x.db"], {}, "target name 'has space' is invalid"),
        (["--target", "a" * 65 + "=sqlite:///x.db"], {}, "is invalid"),
        (["--target", "a/b=sqlite:///x.db"], {}, "target name 'a/b' is invalid"),
        (["--target", "nourl"], {}, "expected NAME=SQLALCHEMY_URL"),
        (["--target", "a="], {}, "expected NAME=SQLALCHEMY_URL"),
        (["--target", "a=sqlite:///x.db", "--target", "a=sqlite:///y.db"], {}, "'a' is configured more than once"),
        ([], {"DBMAINT_TARGETS": "a=sqlite:///x a=sqlite:///y"}, "more than once"),
        (["--target", "a=not a url"], {}, "target 'a': the URL is not a valid SQLAlchemy URL"),
        (["--target", "a=sqlite:///x.db", "--slots", "0"], {}, "--slots: must be at least 1"),
        (["--target", "a=sqlite:///x.db"], {"DBMAINT_SLOTS": "two"}, "DBMAINT_SLOTS: expected a whole number"),
        (["--target", "a=sqlite:///x.db", "--grace", "-1"], {}, "--grace"),
        (["--target", "a=sqlite:///x.db"], {"DBMAINT_GRACE": "inf"}, "DBMAINT_GRACE"),
        (["--target", "a=sqlite:///x.db", "--grace", "soon"], {}, "expected a number of seconds"),
        (["--target", "a=sqlite:///x.db", "--manager", "nohost"], {}, "--manager: expected HOST:PORT"),
        (["--target", "a=sqlite:///x.db", "--manager", "h:99999"], {}, "out of range"),
        (["--target", "a=sqlite:///x.db"], {"DBMAINT_MANAGER": "  "}, "DBMAINT_MANAGER: the manager address"),
        (["--target", "a=sqlite:///x.db", "--manager", "a:1,"], {}, "--manager: the manager address is empty"),
        (["--target", "a=sqlite:///x.db", "--manager", "a:1,a:1"], {}, "'a:1' is given twice"),
        (["--target", "a=sqlite:///x.db", "--manager", "a:1,b"], {}, "--manager: expected HOST:PORT, got 'b'"),
        (["--target", "a=sqlite:///x.db", "--health-listen", "8080"], {}, "--health-listen: expected HOST:PORT"),
        (["--target", "a=sqlite:///x.db", "--log-level", "loud"], {}, "--log-level: unknown log level"),
        (["--target", "a=sqlite:///x.db", "--worker-id", "has space"], {}, "--worker-id"),
    ],
)
def test_errors_name_the_problem(argv: list[str], env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(argv, environ=env)
    assert expected in str(info.value)


def test_errors_and_repr_never_show_the_url_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(["--target", "a=postgresql://user:s3cret@db:notaport/x"], environ={})
    assert "s3cret" not in str(info.value)
    config = parse_config(["--target", "a=postgresql://user:s3cret@db/x"], environ={})
    assert "s3cret" not in repr(config)
    assert config.targets[0].display_url == "postgresql://user:***@db/x"


def test_unknown_flag_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        parse_config(["--nope"], environ={})
    assert info.value.code == 2


def test_cli_exits_2_for_a_target_no_engine_serves(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--target", "ora=oracle://admin:hunter22@db/app", "--worker-id", "w1"], environ={})
    err = capsys.readouterr().err
    assert code == 2
    assert "target 'ora'" in err and "no engine for database dialect 'oracle'" in err
    assert "hunter22" not in err and "admin:***@db" in err


def test_cli_exits_2_for_an_unsupported_sqlite_driver(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--target", "a=sqlite+pysqlcipher:///x.db"], environ={})
    assert code == 2
    assert "driver 'pysqlcipher' is not supported" in capsys.readouterr().err


def test_cli_exits_2_for_bad_config_and_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([], environ={}) == 2
    assert "no target configured" in capsys.readouterr().err
    faults = {"DBMAINT_FAULTS": "slow:vacum=1", "DBMAINT_ALLOW_FAULT_INJECTION": "1"}
    assert cli.main(["--target", "a=sqlite:///x.db"], environ=faults) == 2
    assert "unknown operation 'vacum'" in capsys.readouterr().err


def test_faults_without_the_opt_in_are_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--target", "a=sqlite:///x.db"], environ={"DBMAINT_FAULTS": "slow:vacuum=1"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbmaint-worker: error: DBMAINT_FAULTS is set")
    assert "DBMAINT_ALLOW_FAULT_INJECTION=1" in err
    allowed = parse_config(
        ["--target", "a=sqlite:///x.db", "--allow-fault-injection"], {"DBMAINT_FAULTS": "slow:*=2"}
    )
    assert allowed.faults.slow_seconds("vacuum") == 2.0
    with pytest.raises(ConfigError, match="DBMAINT_FAULTS is set"):
        parse_config(
            ["--target", "a=sqlite:///x.db", "--allow-fault-injection", "off"], {"DBMAINT_FAULTS": "slow:*=2"}
        )


def test_start_line() -> None:
    config = WorkerConfig(
        targets=parse_config(["--target", "a=sqlite:///a.db", "--target", "b=sqlite:///b.db"], environ={}).targets,
        worker_id="w-7",
    )
    assert cli.start_line(config) == "dbmaint-worker w-7 serving targets a, b (slots=1) -> manager 127.0.0.1:50051"


def test_targets_file_adds_targets_and_keeps_urls_off_the_command_line(tmp_path: Path) -> None:
    secrets = tmp_path / "targets"
    secrets.write_text(
        "# name=url, one a line\n\norders=postgresql+psycopg://app:Sup3r@db:5432/orders\n  users=sqlite:///u.db\n"
    )
    config = parse_config(["--target", "a=sqlite:///a.db", "--targets-file", str(secrets)], {})
    assert config.target_names == ("a", "orders", "users")
    assert config.targets[1].url.password == "Sup3r"
    from_env = parse_config([], {"DBMAINT_TARGETS_FILE": str(secrets)})
    assert from_env.target_names == ("orders", "users")


def test_passwords_come_from_variables_or_files(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("fr0m-file\n")
    env = {
        "DBMAINT_TARGETS": "orders-db=postgresql+psycopg://app@db/orders users=mysql+pymysql://root@db/users",
        "DBMAINT_TARGET_PASSWORD_ORDERS_DB": "fr0m-env",
        "DBMAINT_TARGET_PASSWORD_FILE_USERS": str(password_file),
    }
    config = parse_config([], env)
    assert [t.url.password for t in config.targets] == ["fr0m-env", "fr0m-file"]
    assert "fr0m" not in repr(config) and "fr0m" not in config.targets[0].display_url


def test_password_errors_name_the_variable_but_not_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read DBMAINT_TARGET_PASSWORD_FILE_ORDERS"):
        parse_config(
            ["--target", "orders=postgresql://app@db/o"], {"DBMAINT_TARGET_PASSWORD_FILE_ORDERS": "/nope"}
        )
    with pytest.raises(ConfigError, match="has a password") as both:
        parse_config(["--target", "orders=postgresql://app:inurl@db/o"], {"DBMAINT_TARGET_PASSWORD_ORDERS": "x"})
    assert "inurl" not in str(both.value)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(["--targets-file", str(tmp_path / "missing")], {})
