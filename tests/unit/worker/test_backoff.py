from __future__ import annotations

import random

import pytest

from worker_service.backoff import NEXT_ADDRESS_PAUSE, Backoff, RoundPacer


def test_starts_at_a_tenth_of_a_second_and_doubles_up_to_five_seconds() -> None:
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.08 <= delays[0] <= 0.12
    assert 0.16 <= delays[1] <= 0.24
    assert all(d <= 5.0 for d in delays)
    assert delays[-1] >= 4.0  # capped, not growing without bound
    assert [backoff.base(i) for i in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_jitter_spreads_delays() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) > 10


def test_reset_starts_over() -> None:
    backoff = Backoff(rng=random.Random(2))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.12


def test_never_above_the_cap_even_with_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=1.0, jitter=0.5, rng=random.Random(3))
    assert max(backoff.next_delay() for _ in range(200)) <= 1.0


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 6}, {"multiplier": 0.5}, {"jitter": 1.0}])
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_with_several_managers_the_backoff_is_paid_once_a_round_not_once_an_address() -> None:
    pacer = RoundPacer(Backoff(initial=0.4, cap=1.0, jitter=0.0))
    # A dead leader refuses at once, then the standby: only the end of the round waits.
    assert pacer.delay("a", "b") == NEXT_ADDRESS_PAUSE
    assert pacer.delay("b", "a") == 0.4
    assert pacer.delay("a", "b") == NEXT_ADDRESS_PAUSE
    assert pacer.delay("b", "a") == 0.8
    # A hint to an address not tried this round is followed at once too.
    assert pacer.delay("a", "c") == NEXT_ADDRESS_PAUSE
    assert pacer.delay("c", "a") == 1.0


def test_with_one_manager_every_attempt_waits_the_backoff() -> None:
    pacer = RoundPacer(Backoff(initial=0.1, cap=5.0, jitter=0.0))
    assert [pacer.delay("a", "a") for _ in range(3)] == [0.1, 0.2, 0.4]


def test_a_stream_opened_begins_a_new_round_and_a_stable_one_resets_the_backoff() -> None:
    pacer = RoundPacer(Backoff(initial=0.1, cap=5.0, jitter=0.0))
    assert pacer.delay("a", "b") == NEXT_ADDRESS_PAUSE
    pacer.connected()
    assert pacer.delay("b", "a") == NEXT_ADDRESS_PAUSE, "a was tried before the stream to b opened"
    assert pacer.delay("a", "b") == 0.1
    pacer.connected()
    pacer.delay("b", "a")
    assert pacer.delay("a", "b") == 0.2, "the backoff grows across streams that do not last"
    pacer.reset()
    pacer.delay("b", "a")
    assert pacer.delay("a", "b") == 0.1
