"""The table-by-table skeleton's failure policy, loop, note cap and interrupter thread, with a dialect made of
plain functions."""

from __future__ import annotations

import time

import pytest

from tests.support.polling import wait_for
from worker_service.cancel import CancelToken, OperationCancelled, interruption
from worker_service.engines.tables import (
    ConnectionLost,
    RepeatingInterrupter,
    TableOutcome,
    TableStatus,
    run_tables,
)

PROCESSED, SKIPPED, FAILED = TableStatus.PROCESSED, TableStatus.SKIPPED, TableStatus.FAILED


def outcome(name: str, status: TableStatus, reason: str = "") -> TableOutcome:
    return TableOutcome(name, status, (f"{status.value} {name}",), reason)


def never_stopped() -> None:
    return None


def test_a_failed_table_is_recorded_the_next_is_tried_and_the_error_names_every_failed_table() -> None:
    statuses = {"a": FAILED, "b": PROCESSED, "c": SKIPPED, "d": FAILED}
    run = run_tables(list(statuses), lambda t: outcome(t, statuses[t], f"{t} broke"), never_stopped)
    assert [o.name for o in run.outcomes] == ["a", "b", "c", "d"]
    assert (run.processed, run.skipped) == (1, 3)
    assert run.failure_message("vacuum") == "vacuum failed on 2 of 4 table(s): a: a broke; d: d broke"


def test_skipped_tables_alone_do_not_fail_the_child() -> None:
    run = run_tables(["a", "b"], lambda t: outcome(t, SKIPPED if t == "a" else PROCESSED), never_stopped)
    assert run.failure_message("analyze") is None
    assert (run.processed, run.skipped) == (1, 1)


def test_a_lost_connection_stops_the_loop_and_the_rest_count_as_not_run() -> None:
    def run_one(table: str) -> TableOutcome:
        if table == "b":
            raise ConnectionLost(outcome(table, FAILED, "server gone"))
        return outcome(table, PROCESSED)

    run = run_tables(["a", "b", "c", "d"], run_one, never_stopped)
    assert [o.name for o in run.outcomes] == ["a", "b"]
    assert (run.processed, run.skipped, run.not_run, run.lost) == (1, 3, 2, True)
    assert run.failure_message("reindex") == (
        "reindex failed on 1 of 4 table(s): b: server gone"
        " (connection lost: the remaining tables were not processed)"
    )


def test_an_interrupt_wins_over_the_error_of_the_table_it_interrupted() -> None:
    cancel = CancelToken()

    def run_one(table: str) -> TableOutcome:
        cancel.cancel("operator")  # the interrupt makes the statement fail
        return outcome(table, FAILED, "query canceled")

    with pytest.raises(OperationCancelled, match="operator"):
        run_tables(["a", "b"], run_one, lambda: interruption(cancel, None))


def test_a_cancel_before_a_table_stops_the_loop_before_it_runs() -> None:
    cancel = CancelToken()
    ran: list[str] = []

    def run_one(table: str) -> TableOutcome:
        ran.append(table)
        cancel.cancel("operator")
        return outcome(table, PROCESSED)

    with pytest.raises(OperationCancelled):
        run_tables(["a", "b"], run_one, lambda: interruption(cancel, None))
    assert ran == ["a"]


def test_the_note_cap_keeps_skipped_and_failed_tables_first_in_processing_order() -> None:
    statuses = [PROCESSED, PROCESSED, SKIPPED, PROCESSED, FAILED]
    run = run_tables(list(range(5)), lambda i: outcome(f"t{i}", statuses[i]), never_stopped)
    assert run.table_notes(cap=3) == [
        "processed t0",
        "skipped t2",
        "failed t4",
        "2 more table notes left out (limit 3)",
    ]
    assert run.table_notes() == [f"{s.value} t{i}" for i, s in enumerate(statuses)]


def test_a_parallel_pool_is_refused_until_a_dialect_opens_one_connection_per_lane() -> None:
    with pytest.raises(ValueError, match="parallel=2"):
        run_tables(["a"], lambda t: outcome(t, PROCESSED), never_stopped, parallel=2)


class CountingSender:
    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    def send(self) -> None:
        self.sent += 1

    def close(self) -> None:
        self.closed = True


def test_the_interrupter_repeats_its_request_until_stopped_and_sends_none_after() -> None:
    sender = CountingSender()
    interrupter = RepeatingInterrupter(lambda: sender, every=0.01, join_seconds=5.0, name="test-interrupter")
    interrupter()
    interrupter()  # a second interrupt does not start a second thread
    wait_for(lambda: sender.sent >= 3)
    interrupter.stop()
    sent = sender.sent
    time.sleep(0.05)
    assert sender.sent == sent and sender.closed


def test_the_interrupter_does_nothing_once_stopped_or_when_no_sender_can_be_opened() -> None:
    sender = CountingSender()
    stopped_first = RepeatingInterrupter(lambda: sender, every=0.01, join_seconds=5.0, name="test-stopped")
    stopped_first.stop()
    stopped_first()
    unopened = RepeatingInterrupter(lambda: None, every=0.01, join_seconds=5.0, name="test-unopened")
    unopened()
    unopened.stop()
    assert sender.sent == 0
