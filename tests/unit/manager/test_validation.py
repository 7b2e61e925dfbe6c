"""Unit tests of manager_service.validation."""

from __future__ import annotations

import pytest

from dbmaint.operations import Operation, OperationReport
from manager_service.errors import RequestInvalid
from manager_service.validation import (
    REPORT_ENGINE_MAX_LENGTH,
    REPORT_MAX_NOTES,
    REPORT_NOTE_MAX_LENGTH,
    Limits,
    sanitize_report,
    sanitize_text,
    validate_job_id,
    validate_maintenance,
    validate_worker_id,
)

LIMITS = Limits(max_targets=5, max_children=6, max_attempts=4)


def invalid(targets, operations=(), request_id="", limits=LIMITS) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as info:
        validate_maintenance(list(targets), list(operations), request_id, limits)
    assert str(info.value).startswith(info.value.field + ":")
    return info.value


def test_no_targets() -> None:
    assert invalid([]).field == "targets"


def test_too_many_targets() -> None:
    error = invalid([f"db{i}" for i in range(6)])
    assert error.field == "targets"
    assert "5" in error.problem and "6" in error.problem


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="too-long"),
        pytest.param("bad name", id="space"),
        pytest.param("db/1", id="slash"),
        pytest.param("db;drop", id="semicolon"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("-dash", id="leading-dash"),
        pytest.param("_under", id="leading-underscore"),
        pytest.param("dé", id="non-ascii"),
        pytest.param("db\n", id="trailing-newline"),
    ],
)
def test_invalid_target_name_names_its_index(name: str) -> None:
    error = invalid(["good", name])
    assert error.field == "targets[1]"


@pytest.mark.parametrize("name", ["a", "A" * 64, "db_1.main-2", "9lives"])
def test_valid_target_names(name: str) -> None:
    assert validate_maintenance([name], [], "", LIMITS).targets == (name,)


def test_duplicate_target() -> None:
    error = invalid(["db1", "db2", "db1"])
    assert error.field == "targets[2]"
    assert "duplicate" in error.problem and "db1" in error.problem


def test_too_many_children() -> None:
    error = invalid(["a", "b", "c"], [Operation.VACUUM, Operation.ANALYZE, Operation.REINDEX])
    assert error.field == "operations"
    assert "9" in error.problem and "6" in error.problem
    # default operations count too: 3 targets x 3 defaults = 9 > 6
    assert invalid(["a", "b", "c"]).field == "operations"


@pytest.mark.parametrize("request_id", ["has space", "x" * 129, "é", "a/b", "a\n"])
def test_malformed_request_id(request_id: str) -> None:
    assert invalid(["db1"], request_id=request_id).field == "request_id"


def test_defaults_for_empty_operations() -> None:
    spec = validate_maintenance(["db1"], [], "", LIMITS)
    assert spec.operations == (Operation.VACUUM, Operation.ANALYZE, Operation.REINDEX)
    assert spec.request_id is None
    assert spec.max_attempts == 4


def test_valid_request_keeps_order_and_key() -> None:
    spec = validate_maintenance(
        ["b", "a"], [Operation.OPTIMIZE, Operation.VACUUM], "req:1-2.x_" + "y" * 100, LIMITS
    )
    assert spec.targets == ("b", "a")
    assert spec.operations == (Operation.OPTIMIZE, Operation.VACUUM)
    assert spec.request_id == "req:1-2.x_" + "y" * 100


def test_fingerprint_differs_with_operations_and_targets() -> None:
    one = validate_maintenance(["a"], [Operation.VACUUM], "k", LIMITS)
    other_ops = validate_maintenance(["a"], [Operation.ANALYZE], "k", LIMITS)
    other_targets = validate_maintenance(["b"], [Operation.VACUUM], "k", LIMITS)
    assert len({one.fingerprint, other_ops.fingerprint, other_targets.fingerprint}) == 3


def test_job_id() -> None:
    assert validate_job_id("abc") == "abc"
    with pytest.raises(RequestInvalid) as info:
        validate_job_id("")
    assert info.value.field == "id"
    with pytest.raises(RequestInvalid) as info:
        validate_job_id("x" * 65, "parent_id")
    assert info.value.field == "parent_id"


def scope_error(schemas=(), tables=(), limits=LIMITS) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as info:
        validate_maintenance(["db"], [], "", limits, schemas=list(schemas), tables=list(tables))
    return info.value


def test_schemas_and_tables_narrow_the_scope() -> None:
    spec = validate_maintenance(["db"], [], "", LIMITS, schemas=["sales"], tables=["sales.orders", "users"])
    assert spec.scope.schemas == ("sales",)
    assert spec.scope.tables == ("sales.orders", "users")
    assert spec.scope.to_config() == {"schemas": ["sales"], "tables": ["sales.orders", "users"]}


@pytest.mark.parametrize(
    ("schemas", "tables", "field"),
    [
        ([""], [], "schemas[0]"),
        (["ok", "x" * 130], [], "schemas[1]"),
        ([], ["orders", "orders"], "tables[1]"),
        ([], ["bad\x00name"], "tables[0]"),
        ([], ["line\nbreak"], "tables[0]"),
        ([f"s{i}" for i in range(101)], [], "schemas"),
    ],
)
def test_bad_scope_names_are_refused_with_the_field_named(schemas, tables, field) -> None:
    assert scope_error(schemas, tables).field == field


def test_names_that_look_like_sql_are_shape_checked_only() -> None:
    """The worker matches names against the catalog; here they are only data."""
    spec = validate_maintenance(["db"], [], "", LIMITS, tables=['x"; DROP TABLE users; --'])
    assert spec.scope.tables == ('x"; DROP TABLE users; --',)


def test_fingerprint_covers_the_scope() -> None:
    plain = validate_maintenance(["db"], [], "k", LIMITS)
    narrowed = validate_maintenance(["db"], [], "k", LIMITS, tables=["orders"])
    assert plain.fingerprint != narrowed.fingerprint


# -- control characters: refused in ids, replaced in worker text

CONTROL_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\ud800"]


@pytest.mark.parametrize("character", CONTROL_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_job_id_with_a_control_character_is_refused_naming_the_field(character: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_job_id(f"abc{character}def", "parent_id")
    assert info.value.field == "parent_id"
    assert "control character" in info.value.problem
    assert f"U+{ord(character):04X}" in info.value.problem


@pytest.mark.parametrize("character", [*CONTROL_CHARACTERS, "\n", "\t"], ids=lambda c: f"U+{ord(c):04X}")
def test_a_worker_id_with_a_control_character_is_refused_naming_the_field(character: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_worker_id(f"worker{character}1", "hello.worker_id")
    assert info.value.field == "hello.worker_id"
    assert "control character" in info.value.problem


def test_a_worker_id_has_1_to_255_characters() -> None:
    assert validate_worker_id("w" * 255, "worker_id") == "w" * 255
    assert validate_worker_id("wörker-1 (eu)", "worker_id") == "wörker-1 (eu)"
    for bad in ("", "w" * 256):
        with pytest.raises(RequestInvalid) as info:
            validate_worker_id(bad, "worker_id")
        assert info.value.field == "worker_id"


def test_worker_text_keeps_newlines_tabs_and_printable_unicode() -> None:
    text = "VACUUM failed:\n\tdatabase is locked — réessayez 数据库"
    assert sanitize_text(text, 4000) == text


@pytest.mark.parametrize("character", [*CONTROL_CHARACTERS, "\r", "\x0b"], ids=lambda c: f"U+{ord(c):04X}")
def test_worker_text_has_every_other_control_character_replaced(character: str) -> None:
    assert sanitize_text(f"a{character}b{character}", 4000) == "a\ufffdb\ufffd"


def test_worker_text_is_cut_to_its_limit_after_the_replacement() -> None:
    assert sanitize_text("\x00" * 10, 4) == "\ufffd" * 4
    assert sanitize_text("x" * 5000, 4000) == "x" * 4000


def test_a_report_from_a_worker_is_sanitized_and_bounded() -> None:
    report = OperationReport(
        engine="sqlite\x00\x1b[31m" + "e" * 200,
        objects_processed=3,
        notes=("fine\nnote", "bad\x00note", "n" * 5000, *(f"note {i}" for i in range(2000))),
    )
    clean = sanitize_report(report)
    assert clean.engine.startswith("sqlite\ufffd\ufffd[31m")
    assert len(clean.engine) == REPORT_ENGINE_MAX_LENGTH
    assert clean.objects_processed == 3
    assert clean.notes[:2] == ("fine\nnote", "bad\ufffdnote")
    assert clean.notes[2] == "n" * REPORT_NOTE_MAX_LENGTH
    assert len(clean.notes) == REPORT_MAX_NOTES
    assert not any(c in note for note in (clean.engine, *clean.notes) for c in CONTROL_CHARACTERS)


def test_a_clean_report_is_returned_unchanged() -> None:
    report = OperationReport(engine="postgresql", duration_seconds=1.5, notes=("VACUUM", "page_count 3 -> 2"))
    assert sanitize_report(report) == report
