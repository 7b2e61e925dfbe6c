from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from tests.support.worker import wait_until
from worker_service.cancel import (
    CancelToken,
    DeadlineExceeded,
    OperationCancelled,
    interrupting,
    interruption,
)


def test_first_cancel_wins_and_callbacks_run_once() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("a"))
    unregister = token.on_cancel(lambda: calls.append("b"))
    unregister()
    assert token.cancel("first") is True
    assert token.cancel("second") is False
    assert (token.cancelled, token.reason, calls) == (True, "first", ["a"])
    token.on_cancel(lambda: calls.append("late"))  # already cancelled: runs at once
    assert calls == ["a", "late"]


def test_a_failing_callback_does_not_hurt_the_canceller() -> None:
    token = CancelToken()

    def boom() -> None:
        raise RuntimeError("boom")

    token.on_cancel(boom)
    assert token.cancel("x")


def test_interruption_prefers_cancel_over_deadline() -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    token = CancelToken()
    assert isinstance(interruption(token, past), DeadlineExceeded)
    assert interruption(token, None) is None
    token.cancel("stop")
    error = interruption(token, past)
    assert isinstance(error, OperationCancelled) and error.reason == "stop"


def test_interrupting_calls_interrupt_on_cancel_and_at_the_deadline() -> None:
    fired = threading.Event()
    token = CancelToken()
    with interrupting(fired.set, token, None):
        token.cancel("go")
    assert fired.is_set()

    fired.clear()
    deadline = datetime.now(UTC) + timedelta(seconds=0.05)
    started = time.monotonic()
    with interrupting(fired.set, CancelToken(), deadline) as state:
        wait_until(fired.is_set, timeout=2)
    assert state.deadline_reached
    assert time.monotonic() - started < 1.0


def test_interrupting_unregisters_when_the_block_ends() -> None:
    fired = threading.Event()
    token = CancelToken()
    with interrupting(fired.set, token, datetime.now(UTC) + timedelta(seconds=0.05)):
        pass
    token.cancel("late")
    time.sleep(0.1)  # the deadline timer would have fired by now; it must not
    assert not fired.is_set()
