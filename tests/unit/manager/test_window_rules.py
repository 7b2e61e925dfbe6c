"""Unit tests of manager_service.window_rules: openings, cutoff, DST, end policies, JSON and validation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbmaint.operations import Operation
from manager_service.schedule_rules import ScheduleRuleError
from manager_service.window_rules import (
    DEFAULT_END_POLICY,
    EndPolicy,
    Opening,
    Window,
    closed_for_good,
    current_opening,
    end_policy,
    from_dict,
    may_start,
    next_opening,
    to_dict,
    waiting_reason,
    wakeup_after,
    window,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


START, END = at("2026-12-02T01:00Z"), at("2026-12-02T05:00Z")


def one_off(cutoff: timedelta = timedelta(0), zone: str = "Europe/Berlin") -> Window:
    return window(START, END, "", None, zone, cutoff, {})


def nightly(cron: str = "0 2 * * *", hours: float = 2, cutoff: timedelta = timedelta(0)) -> Window:
    return window(None, None, cron, timedelta(hours=hours), "Europe/Berlin", cutoff, {})


# -- one-off


def test_a_one_off_window_before_it_opens_waits_and_says_when_it_opens() -> None:
    w = one_off()
    now = at("2026-12-01T12:00Z")
    assert current_opening(w, now) is None
    assert not may_start(w, now)
    assert not closed_for_good(w, now)
    assert next_opening(w, now) == Opening(START, END)
    assert wakeup_after(w, now) == START
    assert waiting_reason(w, now) == (
        "waiting for its maintenance window: opens 2026-12-02 02:00 Europe/Berlin (2026-12-02T01:00:00Z)"
    )


def test_a_one_off_window_lets_children_start_from_its_start_until_its_end() -> None:
    w = one_off()
    assert may_start(w, START)
    assert current_opening(w, START + timedelta(hours=1)) == Opening(START, END)
    assert next_opening(w, START) is None
    assert waiting_reason(w, START) == ""
    assert wakeup_after(w, START) == END
    assert not may_start(w, END)


def test_a_one_off_window_is_closed_for_good_after_its_end() -> None:
    w = one_off()
    after = END + timedelta(minutes=1)
    assert not may_start(w, after)
    assert closed_for_good(w, after)
    assert wakeup_after(w, after) is None
    assert waiting_reason(w, after).startswith(
        "its maintenance window closed: no new start after 2026-12-02 06:00"
    )


def test_the_cutoff_ends_new_starts_before_the_window_closes() -> None:
    w = one_off(cutoff=timedelta(minutes=30))
    last_start = END - timedelta(minutes=30)
    assert current_opening(w, START) is not None
    assert current_opening(w, START).last_start == last_start  # type: ignore[union-attr]
    assert may_start(w, last_start - timedelta(microseconds=1))
    assert not may_start(w, last_start)
    assert closed_for_good(w, last_start)
    assert wakeup_after(w, START) == last_start


# -- recurring


def test_a_recurring_window_opens_every_day_at_its_wall_clock_time() -> None:
    w = nightly()
    evening = at("2026-12-01T20:00Z")
    assert not may_start(w, evening)
    assert not closed_for_good(w, evening)
    assert next_opening(w, evening) == Opening(at("2026-12-02T01:00Z"), at("2026-12-02T03:00Z"))
    assert may_start(w, at("2026-12-02T02:59Z"))
    assert not may_start(w, at("2026-12-02T03:00Z"))
    assert next_opening(w, at("2026-12-02T03:00Z")) == Opening(at("2026-12-03T01:00Z"), at("2026-12-03T03:00Z"))
    assert waiting_reason(w, evening) == (
        "waiting for its maintenance window: opens 2026-12-02 02:00 Europe/Berlin (2026-12-02T01:00:00Z)"
    )


def test_a_recurring_window_past_its_cutoff_waits_for_the_next_opening() -> None:
    w = nightly(cutoff=timedelta(minutes=30))
    late = at("2026-12-02T02:45Z")
    assert current_opening(w, late) is not None
    assert not may_start(w, late)
    assert not closed_for_good(w, late)
    assert wakeup_after(w, late) == at("2026-12-03T01:00Z")
    assert wakeup_after(w, at("2026-12-02T01:10Z")) == at("2026-12-02T02:30Z")


def test_a_recurring_window_follows_the_dst_rules_of_schedules() -> None:
    w = nightly()
    # Spring forward: 02:00 does not exist in Berlin; the window opens at 03:00 CEST.
    assert next_opening(w, at("2026-03-28T12:00Z")) == Opening(at("2026-03-29T01:00Z"), at("2026-03-29T03:00Z"))
    # Fall back: 02:00 happens twice; the window opens at the first one (CEST), once.
    assert next_opening(w, at("2026-10-24T12:00Z")) == Opening(at("2026-10-25T00:00Z"), at("2026-10-25T02:00Z"))
    assert next_opening(w, at("2026-10-25T00:30Z")) == Opening(at("2026-10-26T01:00Z"), at("2026-10-26T03:00Z"))


# -- end policies


def test_end_policy_defaults_cancel_everything_but_reindex() -> None:
    w = one_off()
    assert {op: end_policy(w, op) for op in Operation} == {
        Operation.VACUUM: EndPolicy.CANCEL,
        Operation.ANALYZE: EndPolicy.CANCEL,
        Operation.OPTIMIZE: EndPolicy.CANCEL,
        Operation.REINDEX: EndPolicy.FINISH,
    }
    assert set(DEFAULT_END_POLICY) == set(Operation)


def test_end_policy_overrides_only_the_operations_named() -> None:
    w = window(START, END, "", None, "", timedelta(0), {"vacuum": EndPolicy.FINISH, "reindex": "cancel"})
    assert end_policy(w, Operation.VACUUM) is EndPolicy.FINISH
    assert end_policy(w, Operation.REINDEX) is EndPolicy.CANCEL
    assert end_policy(w, Operation.ANALYZE) is EndPolicy.CANCEL
    assert w.on_end == {Operation.VACUUM: EndPolicy.FINISH, Operation.REINDEX: EndPolicy.CANCEL}


# -- JSON


@pytest.mark.parametrize(
    "w",
    [
        window(START, END, "", None, "", timedelta(minutes=15), {"reindex": EndPolicy.CANCEL}),
        window(None, None, "@daily", timedelta(hours=4, seconds=1.5), "America/New_York", timedelta(0), {}),
    ],
    ids=["one-off", "recurring"],
)
def test_a_window_survives_a_json_round_trip(w: Window) -> None:
    assert from_dict(json.loads(json.dumps(to_dict(w)))) == w


# -- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either one-off"),
        ({"start": START, "end": END, "cron": "@daily", "duration": timedelta(hours=1)}, "either one-off"),
        ({"start": START}, "needs both start and end"),
        ({"end": END}, "needs both start and end"),
        ({"start": END, "end": START}, "before it starts"),
        ({"start": START, "end": START}, "before it starts"),
        ({"cron": "@daily"}, "needs both cron and duration"),
        ({"duration": timedelta(hours=1)}, "needs both cron and duration"),
        ({"cron": "@daily", "duration": timedelta(seconds=30)}, "at least 0:01:00"),
        ({"cron": "@daily", "duration": timedelta(hours=24)}, "not shorter than its cron's interval"),
        ({"cron": "0 2,3 * * *", "duration": timedelta(hours=2)}, r"interval \(1:00:00\)"),
        ({"cron": "0 25 * * *", "duration": timedelta(hours=1)}, "hour field"),
        ({"start": START, "end": END, "cutoff": timedelta(hours=4)}, "cutoff"),
        ({"start": START, "end": END, "cutoff": timedelta(seconds=-1)}, "cutoff"),
        ({"start": START, "end": END, "on_end": {"defrag": EndPolicy.CANCEL}}, "unknown operation 'defrag'"),
        ({"start": START, "end": END, "on_end": {"vacuum": "pause"}}, "unknown policy 'pause'"),
        ({"start": START, "end": END, "time_zone": "Atlantis/Capital"}, "unknown time zone"),
    ],
)
def test_window_refuses_what_the_rules_forbid(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "start": None,
        "end": None,
        "cron": "",
        "duration": None,
        "time_zone": "",
        "cutoff": timedelta(0),
        "on_end": {},
    }
    arguments.update(kwargs)
    with pytest.raises(ScheduleRuleError, match=message):
        window(**arguments)  # type: ignore[arg-type]


# -- properties

windows = st.one_of(
    st.builds(
        lambda hours, cutoff: window(START, START + timedelta(hours=hours), "", None, "", cutoff, {}),
        st.integers(1, 48),
        st.sampled_from([timedelta(0), timedelta(minutes=30)]),
    ),
    st.builds(
        lambda cron, minutes, zone: window(None, None, cron, timedelta(minutes=minutes), zone, timedelta(0), {}),
        st.sampled_from(["0 2 * * *", "30 1 * * *", "0 */6 * * *", "0 3 * * 0"]),
        st.integers(1, 59),
        st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    ),
)
moments = st.sampled_from(
    [at("2026-03-07T12:00Z"), at("2026-03-28T12:00Z"), at("2026-10-24T12:00Z"), at("2026-12-01T12:00Z")]
).flatmap(lambda base: st.integers(0, 3 * 86400).map(lambda s: base + timedelta(seconds=s)))


@settings(max_examples=80, deadline=None)
@given(w=windows, now=moments)
def test_may_start_implies_an_opening_and_nothing_changes_before_the_wakeup(w: Window, now: datetime) -> None:
    assert (waiting_reason(w, now) == "") == may_start(w, now)
    if may_start(w, now):
        opening = current_opening(w, now)
        assert opening is not None
        assert opening.opens <= now < opening.last_start <= opening.closes
        assert not closed_for_good(w, now)
    wakeup = wakeup_after(w, now)
    if wakeup is None:
        assert closed_for_good(w, now)
        return
    assert wakeup > now
    midway = now + (wakeup - now) / 2
    assert may_start(w, midway) == may_start(w, now)
    assert closed_for_good(w, midway) == closed_for_good(w, now)


def test_opening_last_start_is_the_close_less_the_cutoff() -> None:
    opening = Opening(START, END, timedelta(minutes=10))
    assert opening.last_start == END - timedelta(minutes=10)
    assert Opening(START, END).last_start == END
