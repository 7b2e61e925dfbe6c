"""The picker of the next manager address, and how a refusal and a leader hint are read."""

from __future__ import annotations

import pytest

from dbmaint.managers import Move, is_refusal, leader_hint, next_manager, same_address

THREE = ("a:50051", "b:50051", "c:50051")


def test_the_first_address_is_tried_first() -> None:
    assert next_manager(THREE, None).address == "a:50051"


def test_without_a_hint_the_client_rotates_to_the_next_address_and_wraps_around() -> None:
    assert next_manager(THREE, "a:50051").address == "b:50051"
    assert next_manager(THREE, "b:50051").address == "c:50051"
    assert next_manager(THREE, "c:50051").address == "a:50051"


def test_a_configured_leader_hint_is_followed_ahead_of_the_rotation() -> None:
    move = next_manager(THREE, "a:50051", "c:50051")
    assert move == Move("c:50051", "a:50051 named c:50051 as the leader")


def test_a_hint_the_operator_did_not_configure_is_never_followed() -> None:
    move = next_manager(THREE, "a:50051", "evil:50051")
    assert move.address == "b:50051"
    assert "evil:50051 is not a configured manager address" in move.reason


def test_a_hint_naming_the_address_that_just_failed_is_not_followed() -> None:
    assert next_manager(THREE, "b:50051", "b:50051").address == "c:50051"


def test_a_hint_matches_a_configured_dns_target_and_ignores_the_hosts_case() -> None:
    managers = ("dns:///Manager-1:50051", "dns:///manager-2:50051")
    assert next_manager(managers, managers[1], "manager-1:50051").address == "dns:///Manager-1:50051"
    assert same_address("[::1]:50051", "[::1]:50051")
    assert not same_address("manager-1:50052", "dns:///manager-1:50051")


def test_a_single_address_is_always_the_next_one_whatever_the_hint() -> None:
    assert next_manager(("only:1",), "only:1", "other:1").address == "only:1"


def test_an_unknown_failed_address_starts_from_the_first() -> None:
    assert next_manager(THREE, "elsewhere:1").address == "a:50051"


def test_no_address_is_an_error() -> None:
    with pytest.raises(ValueError, match="no manager address"):
        next_manager((), None)


def test_the_leader_hint_is_read_from_trailing_metadata_of_text_or_bytes() -> None:
    assert leader_hint([("other", "x"), ("dbmaint-leader", " b:50051 ")]) == "b:50051"
    assert leader_hint([("Dbmaint-Leader", b"c:50051")]) == "c:50051"
    assert leader_hint([("other", "x")]) == ""
    assert leader_hint(None) == ""


@pytest.mark.parametrize(
    ("code", "trailing", "refused"),
    [
        ("UNAVAILABLE", [("dbmaint-not-run", "1")], True),
        ("UNAVAILABLE", [("dbmaint-leader", "b:50051"), ("Dbmaint-Not-Run", b"1")], True),
        # A hint alone: a write whose COMMIT was cut also names the new leader; it may have committed.
        ("UNAVAILABLE", [("dbmaint-leader", "b:50051")], False),
        ("UNAVAILABLE", [], False),  # a reset connection, "failed to connect": the transport's, unmarked
        ("UNAVAILABLE", None, False),
        ("DEADLINE_EXCEEDED", [("dbmaint-not-run", "1")], False),
        ("INTERNAL", [], False),
    ],
)
def test_only_an_unavailable_marked_not_run_is_a_refusal(
    code: str, trailing: list[tuple[str, str | bytes]] | None, refused: bool
) -> None:
    assert is_refusal(code, trailing) is refused
