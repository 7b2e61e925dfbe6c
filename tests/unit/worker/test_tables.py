"""The table-by-table skeleton's failure policy, loop, note cap and interrupter thread, with a dialect made of
plain functions."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dbmaint.operations import OperationReport
from tests.support.polling import wait_for
from worker_service.cancel import CancelToken, OperationCancelled, interruption
from worker_service.engines.base import OperationFailed, RunStatus
from worker_service.engines.tables import (
    ConnectionLost,
    RepeatingInterrupter,
    Stopped,
    TableOutcome,
    TableRun,
    TableStatus,
    run_operation,
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


def slow_lane(statuses: dict[str, TableStatus], running: list[str]) -> Callable[[str], TableOutcome]:
    """A lane's run_one that records how many tables run at once (in ``running``, guarded by the GIL)."""

    def run_one(table: str) -> TableOutcome:
        running.append(table)
        peak.append(len(running))
        time.sleep(0.05)
        running.remove(table)
        return outcome(table, statuses[table], f"{table} broke")

    peak: list[int] = []
    run_one.peak = peak  # type: ignore[attr-defined]
    return run_one


def test_parallel_lanes_run_tables_at_once_note_failures_and_keep_the_serial_order() -> None:
    statuses = {f"t{i}": FAILED if i == 2 else PROCESSED for i in range(8)}
    running: list[str] = []
    lanes = [slow_lane(statuses, running) for _ in range(4)]
    run = run_tables(list(statuses), lanes[0], never_stopped, more_lanes=lanes[1:])
    assert [o.name for o in run.outcomes] == list(statuses)
    assert (run.processed, run.skipped) == (7, 1)
    assert max(max(lane.peak, default=0) for lane in lanes) >= 2  # type: ignore[attr-defined]
    assert run.failure_message("vacuum") == "vacuum failed on 1 of 8 table(s): t2: t2 broke"


def test_an_interruption_in_one_lane_stops_every_lane() -> None:
    token = CancelToken()

    def run_one(table: str) -> TableOutcome:
        if table == "t1":
            token.cancel("stop")
            return outcome(table, FAILED, "cancelled")
        time.sleep(0.05)
        return outcome(table, PROCESSED)

    tables = [f"t{i}" for i in range(20)]
    into = TableRun(0)
    with pytest.raises(OperationCancelled):
        run_tables(tables, run_one, lambda: interruption(token, None), into=into, more_lanes=[run_one])
    assert len(into.outcomes) < 5


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


class DriverError(Exception):
    pass


class FakeSession:
    """A dialect part that records what the template asks of it; ``statuses`` says how each table ends."""

    driver_errors = (DriverError,)

    def __init__(
        self,
        statuses: dict[str, TableStatus],
        lose: str = "",
        broken_after: bool = False,
        cancel_in_prepare: CancelToken | None = None,
    ) -> None:
        self.statuses = statuses
        self.lose = lose
        self.broken_after = broken_after
        self.cancel_in_prepare = cancel_in_prepare
        self.calls: list[str] = []

    def interrupt(self) -> None:
        self.calls.append("interrupt")

    def stop_interrupting(self) -> None:
        self.calls.append("stop interrupting")

    def prepare(self, status: RunStatus) -> None:
        self.calls.append("prepare")
        if self.cancel_in_prepare is not None:
            self.cancel_in_prepare.cancel("operator")

    def tables_in_scope(self) -> list[str]:
        self.calls.append("tables")
        return list(self.statuses)

    def inject_slow(self, seconds: float, stopped: Stopped) -> None:
        self.calls.append(f"slow {seconds:g}")

    def run_one(self, table: str) -> TableOutcome:
        self.calls.append(f"run {table}")
        if table == self.lose:
            raise ConnectionLost(outcome(table, FAILED, "server gone"))
        return outcome(table, self.statuses[table], f"{table} broke")

    def after_tables(self, run: TableRun) -> None:
        self.calls.append("after")
        if self.broken_after:
            raise DriverError("drop failed")

    def failure(self, exc: Exception, run: TableRun) -> OperationFailed:
        return OperationFailed(f"while after: {exc} ({run.processed} processed)")

    def finish(self, run: TableRun) -> OperationReport:
        self.calls.append("finish")
        return OperationReport(engine="fake", objects_processed=run.processed, objects_skipped=run.skipped)


def operate(session: FakeSession, cancel: CancelToken | None = None, slow: float = 0.0) -> OperationReport:
    return run_operation(session, "vacuum", cancel or CancelToken(), None, RunStatus(), slow)


def test_the_template_runs_the_dialect_parts_in_order_and_returns_the_report() -> None:
    session = FakeSession({"a": PROCESSED, "b": SKIPPED})
    report = operate(session, slow=0.5)
    assert session.calls == [
        "prepare",
        "tables",
        "slow 0.5",
        "run a",
        "run b",
        "after",
        "stop interrupting",
        "finish",
    ]
    assert (report.objects_processed, report.objects_skipped) == (1, 1)


def test_a_failed_table_fails_the_operation_after_finish_with_the_report_attached() -> None:
    session = FakeSession({"a": FAILED, "b": PROCESSED})
    with pytest.raises(OperationFailed, match=r"^vacuum failed on 1 of 2 table\(s\): a: a broke$") as failed:
        operate(session)
    assert failed.value.report is not None and failed.value.report.objects_processed == 1
    assert session.calls[-2:] == ["stop interrupting", "finish"]


def test_a_lost_connection_skips_the_work_after_the_tables() -> None:
    session = FakeSession({"a": PROCESSED, "b": PROCESSED, "c": PROCESSED}, lose="b")
    with pytest.raises(OperationFailed, match="connection lost"):
        operate(session)
    assert "after" not in session.calls and "run c" not in session.calls and "finish" in session.calls


def test_a_driver_error_outside_the_tables_is_the_dialects_failure_with_the_tables_so_far() -> None:
    session = FakeSession({"a": PROCESSED}, broken_after=True)
    with pytest.raises(OperationFailed, match=r"while after: drop failed \(1 processed\)"):
        operate(session)
    assert "finish" not in session.calls


def test_a_cancel_before_the_first_table_stops_it_and_sends_the_interrupt() -> None:
    cancel = CancelToken()
    session = FakeSession({"a": PROCESSED}, cancel_in_prepare=cancel)
    with pytest.raises(OperationCancelled, match="operator"):
        operate(session, cancel)
    assert session.calls == ["prepare", "interrupt", "tables", "stop interrupting"]
