"""The configuration layer (dbmaint.config): one precedence rule, where each value came from, one error form."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dbmaint import parsers
from dbmaint.config import DEFAULT, FILE, FLAG, VARIABLE, ConfigError, Option, Program, Setting, markdown_table
from dbmaint.logs import LOG_LEVELS, setup_logging
from manager_service.config import parse_config as parse_manager_config
from worker_service.config import parse_config as parse_worker_config

OPTIONS = (
    Option("slots", "operations at once", "--slots", "X_SLOTS", parsers.whole_number(1), 1),
    Option("names", "names", "--name", "X_NAMES", default=(), repeat=True),
    Option("token", "a secret", env="X_TOKEN", secret=True),
    Option("switch", "on or off", "--switch", "X_SWITCH", parsers.on_off, False, flag_alone="on"),
)
PROGRAM = Program("prog", "a test program", OPTIONS)


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    assert PROGRAM.parse(["--slots", "3"], {"X_SLOTS": "2"}).found["slots"] == Setting(3, FLAG, "--slots")
    assert PROGRAM.parse([], {"X_SLOTS": "2"}).found["slots"] == Setting(2, VARIABLE, "X_SLOTS")
    assert PROGRAM.parse([], {}).found["slots"] == Setting(1, DEFAULT)


def test_a_variable_set_to_the_empty_string_counts_as_unset() -> None:
    assert PROGRAM.parse([], {"X_SLOTS": ""}).found["slots"] == Setting(1, DEFAULT)


def test_repeated_flags_replace_the_whitespace_separated_variable() -> None:
    assert PROGRAM.parse([], {"X_NAMES": " a\tb "})["names"] == ("a", "b")
    assert PROGRAM.parse(["--name", "c", "--name", "d"], {"X_NAMES": "a b"})["names"] == ("c", "d")


def test_a_switch_flag_alone_means_on_and_takes_a_value_too() -> None:
    assert PROGRAM.parse(["--switch"], {})["switch"] is True
    assert PROGRAM.parse(["--switch", "off"], {"X_SWITCH": "on"})["switch"] is False
    assert PROGRAM.parse([], {"X_SWITCH": "yes"}).found["switch"] == Setting(True, VARIABLE, "X_SWITCH")


def test_a_secret_comes_from_its_variable_or_the_file_its_file_variable_names(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert PROGRAM.parse([], {"X_TOKEN": "direct"}).found["token"] == Setting("direct", VARIABLE, "X_TOKEN")
    assert PROGRAM.parse([], {"X_TOKEN_FILE": str(secret)}).found["token"] == Setting(
        "from-file", FILE, "X_TOKEN_FILE"
    )
    with pytest.raises(ConfigError, match="set X_TOKEN or X_TOKEN_FILE, not both"):
        PROGRAM.parse([], {"X_TOKEN": "direct", "X_TOKEN_FILE": str(secret)})
    with pytest.raises(ConfigError, match="X_TOKEN_FILE: cannot read"):
        PROGRAM.parse([], {"X_TOKEN_FILE": str(tmp_path / "missing")})


def test_a_secret_has_no_flag() -> None:
    with pytest.raises(SystemExit) as info:
        PROGRAM.parse(["--token", "x"], {})
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--slots", "0"], {}, "--slots: must be at least 1, got 0"),
        ([], {"X_SLOTS": "two"}, "X_SLOTS: expected a whole number, got 'two'"),
        ([], {"X_SWITCH": "maybe"}, "X_SWITCH: expected on or off, got 'maybe'"),
    ],
)
def test_a_bad_value_is_an_error_that_starts_with_its_flag_or_variable(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PROGRAM.parse(argv, env)
    assert str(info.value) == message


def test_print_config_lines_show_each_value_and_its_source_with_secrets_masked() -> None:
    settings = PROGRAM.parse(["--slots", "2"], {"X_TOKEN": "hunter2", "X_NAMES": "a"})
    assert settings.lines() == [
        "slots  = 2  (flag --slots)",
        "names  = ('a',)  (variable X_NAMES)",
        "token  = ***  (variable X_TOKEN)",
        "switch = False  (default)",
    ]
    assert "hunter2" not in "\n".join(settings.lines())


def test_the_markdown_table_names_flag_variable_and_file_form_and_escapes_pipes() -> None:
    table = markdown_table(OPTIONS).splitlines()
    assert table[:2] == ["| flag | variable | default | meaning |", "|---|---|---|---|"]
    assert table[2] == "| `--slots` | `X_SLOTS` | `1` | operations at once |"
    assert table[3].startswith("| `--name` (repeat) | `X_NAMES` |")
    assert table[4] == "| — | `X_TOKEN` (or `X_TOKEN_FILE`) | `(none)` | a secret |"
    piped = Option("mode", "a|b", "--mode", "X_MODE", default="a")
    assert markdown_table([piped]).splitlines()[2] == "| `--mode` | `X_MODE` | `a` | a\\|b |"


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error"])
def test_manager_and_worker_accept_the_same_log_levels_in_any_case(level: str) -> None:
    target = ["--target", "a=sqlite:///a.db"]
    assert parse_manager_config(["--log-level", level], {}).log_level == level.upper()
    assert parse_worker_config([*target, "--log-level", level], {}).log_level == level.upper()


@pytest.mark.parametrize("level", ["CRITICAL", "trace", ""])
def test_manager_and_worker_refuse_the_same_other_log_levels(level: str) -> None:
    with pytest.raises(ConfigError, match="--log-level: unknown log level"):
        parse_manager_config(["--log-level", level], {})
    with pytest.raises(ConfigError, match="--log-level: unknown log level"):
        parse_worker_config(["--target", "a=sqlite:///a.db", "--log-level", level], {})


def test_the_accepted_log_levels_are_the_four_the_readme_names() -> None:
    assert LOG_LEVELS == ("DEBUG", "INFO", "WARNING", "ERROR")


def test_setup_logging_installs_one_handler_and_keeps_library_chatter_at_warning() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("INFO", "text", "%(message)s")
        setup_logging("INFO", "json", "%(message)s")
        assert len(root.handlers) == 1 and root.level == logging.INFO
        assert logging.getLogger("sqlalchemy").level == logging.WARNING
        setup_logging("DEBUG", "text", "%(message)s")
        assert logging.getLogger("grpc").level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in ("grpc", "sqlalchemy", "alembic"):
            logging.getLogger(name).setLevel(logging.NOTSET)
