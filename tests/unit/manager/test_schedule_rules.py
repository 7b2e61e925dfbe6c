"""Unit tests of manager_service.schedule_rules: cron validation, the DST rules, jitter, catch-up and overlap."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manager_service.schedule_rules import (
    DEFAULT_CRON_CATCHUP,
    DST_EXPECTATIONS,
    Cadence,
    OverlapAction,
    OverlapPolicy,
    ScheduleRuleError,
    cadence,
    check_cron,
    default_catchup,
    dst_table,
    due,
    interval_hint,
    jitter_for,
    next_slot,
    on_overlap,
    slots_after,
    zone_named,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def every(seconds: float, anchor: datetime = T0) -> Cadence:
    return cadence("", timedelta(seconds=seconds), "", anchor)


def cron(expression: str, zone: str = "", anchor: datetime = T0) -> Cadence:
    return cadence(expression, None, zone, anchor)


# -- validation


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("  */15\t2  * *   * ", "*/15 2 * * *"),
        ("@daily", "0 0 * * *"),
        ("@MIDNIGHT", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("30 3 * * sun", "30 3 * * sun"),
        ("0 0 29 2 *", "0 0 29 2 *"),
    ],
)
def test_check_cron_accepts_five_fields_and_aliases_and_normalizes_them(expression: str, normalized: str) -> None:
    assert check_cron(expression) == normalized


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("@often", "unknown cron alias"),
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("61 * * * *", "minute field '61'"),
        ("0 24 * * *", "hour field '24'"),
        ("0 0 32 * *", "day-of-month field '32'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("0 0 * * fun", "day-of-week field 'fun'"),
        ("H * * * *", "hashed (H) and random (R)"),
        ("R 2 * * *", "hashed (H) and random (R)"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 * * $", "character"),
    ],
)
def test_check_cron_refuses_anything_else_naming_the_problem(expression: str, message: str) -> None:
    with pytest.raises(ScheduleRuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cron(expression)


def test_zone_named_reads_iana_names_and_empty_as_utc() -> None:
    assert zone_named("").key == "UTC"
    assert zone_named("Europe/Berlin").key == "Europe/Berlin"


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "../etc/passwd", "not a zone"])
def test_zone_named_refuses_unknown_zones(name: str) -> None:
    with pytest.raises(ScheduleRuleError, match="unknown time zone"):
        zone_named(name)


def test_cadence_needs_exactly_one_of_cron_and_every() -> None:
    with pytest.raises(ScheduleRuleError, match="exactly one"):
        cadence("", None, "", T0)
    with pytest.raises(ScheduleRuleError, match="exactly one"):
        cadence("@daily", timedelta(minutes=5), "", T0)
    assert cadence("@daily", timedelta(0), "", T0).every is None  # a Duration's default is "unset"


def test_cadence_refuses_every_shorter_than_a_second_and_unknown_zones() -> None:
    with pytest.raises(ScheduleRuleError, match="at least 1s"):
        cadence("", timedelta(milliseconds=500), "", T0)
    with pytest.raises(ScheduleRuleError, match="unknown time zone"):
        cadence("@daily", None, "Nowhere/Town", T0)


def test_cadence_keeps_the_anchor_in_utc() -> None:
    berlin = zone_named("Europe/Berlin")
    c = cadence("", timedelta(hours=1), "", datetime(2026, 6, 1, 12, tzinfo=berlin))
    assert c.anchor == at("2026-06-01T10:00Z")
    assert c.anchor.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_slot(every(60), datetime(2026, 1, 1))


# -- slots


def test_every_slots_are_the_anchor_plus_whole_intervals() -> None:
    c = every(90)
    assert list(slots_after(c, T0 - timedelta(days=1), T0 + timedelta(minutes=5))) == [
        T0 + timedelta(seconds=90),
        T0 + timedelta(seconds=180),
        T0 + timedelta(seconds=270),
    ]
    assert next_slot(c, T0 + timedelta(seconds=90)) == T0 + timedelta(seconds=180)


def test_every_is_absolute_time_across_dst() -> None:
    anchor = at("2026-03-29T00:00Z")  # 01:00 CET, an hour before Berlin springs forward
    c = cadence("", timedelta(minutes=45), "Europe/Berlin", anchor)
    slots = list(slots_after(c, anchor, anchor + timedelta(hours=3)))
    assert [s - anchor for s in slots] == [timedelta(minutes=45 * k) for k in range(1, 5)]


def test_cron_slots_are_wall_clock_times_in_the_zone() -> None:
    c = cron("30 3 * * *", "Europe/Berlin")
    assert next_slot(c, at("2026-07-01T00:00Z")) == at("2026-07-01T01:30Z")  # CEST
    assert next_slot(c, at("2026-12-01T00:00Z")) == at("2026-12-01T02:30Z")  # CET


def test_interval_hint_and_default_catchup() -> None:
    assert interval_hint(every(300)) == timedelta(seconds=300)
    assert default_catchup(every(300)) == timedelta(seconds=300)
    assert interval_hint(cron("*/15 * * * *")) == timedelta(minutes=15)
    assert default_catchup(cron("*/15 * * * *")) == DEFAULT_CRON_CATCHUP


@pytest.mark.parametrize(
    ("zone", "day", "expression", "expected"),
    DST_EXPECTATIONS,
    ids=[f"{zone}-{day}-{expr}" for zone, day, expr, _ in DST_EXPECTATIONS],
)
def test_dst_days_fire_each_wall_clock_time_once(
    zone: str, day: str, expression: str, expected: tuple[str, ...]
) -> None:
    row = next(r for r in dst_table() if (r.zone, r.day, r.cron) == (zone, day, expression))
    assert row.actual == expected


def test_dst_table_covers_both_zones_both_change_days_utc_and_the_pinned_crons() -> None:
    covered = {(zone, day) for zone, day, _, _ in DST_EXPECTATIONS}
    assert covered >= {
        ("Europe/Berlin", "2026-03-29"),
        ("Europe/Berlin", "2026-10-25"),
        ("America/New_York", "2026-03-08"),
        ("America/New_York", "2026-11-01"),
        ("UTC", "2026-03-29"),
    }
    pinned = {"0 2 * * *", "30 2 * * *", "*/15 2 * * *", "30 1 * * *", "0 * * * *", "@daily"}
    for zone_day in covered:
        assert {expr for zone, day, expr, _ in DST_EXPECTATIONS if (zone, day) == zone_day} >= pinned


def test_module_main_prints_the_dst_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "manager_service.schedule_rules"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "| Europe/Berlin | 2026-03-29 | `*/15 2 * * *` | 2026-03-29T01:00Z | 2026-03-29T01:00Z | True |" in (
        result.stdout
    )
    assert "False" not in result.stdout


def test_hourly_on_the_spring_forward_day_has_one_slot_for_the_missing_hour() -> None:
    c = cron("@hourly", "America/New_York")
    slots = list(slots_after(c, at("2026-03-08T05:30Z"), at("2026-03-08T08:30Z")))
    assert slots == [at("2026-03-08T06:00Z"), at("2026-03-08T07:00Z"), at("2026-03-08T08:00Z")]


def test_a_cron_walk_that_starts_inside_the_repeated_hour_does_not_repeat_it() -> None:
    c = cron("*/30 * * * *", "America/New_York")
    inside_second_occurrence = at("2026-11-01T06:10Z")  # 01:10 EST, after 01:00 and 01:30 EDT fired
    assert next_slot(c, inside_second_occurrence) == at("2026-11-01T07:00Z")  # 02:00 EST


# -- jitter


def test_jitter_is_zero_without_jitter_and_deterministic_with_it() -> None:
    assert jitter_for("nightly", T0, timedelta(0)) == timedelta(0)
    first = jitter_for("nightly", T0, timedelta(minutes=10))
    assert first == jitter_for("nightly", T0, timedelta(minutes=10))
    spread = {jitter_for(f"schedule-{i}", T0, timedelta(minutes=10)) for i in range(20)}
    assert len(spread) > 15  # different schedules get different delays


# -- due


def test_nothing_is_due_before_the_first_slot() -> None:
    result = due(every(60), "s", None, T0 + timedelta(seconds=59), timedelta(minutes=1), timedelta(0), None, None)
    assert (result.fire, result.missed_first, result.missed_count) == (None, None, 0)


def test_the_slot_fires_when_its_time_comes() -> None:
    result = due(every(60), "s", None, T0 + timedelta(seconds=60), timedelta(minutes=1), timedelta(0), None, None)
    assert result.fire == T0 + timedelta(seconds=60)
    assert result.missed_count == 0


def test_a_fired_slot_is_not_due_again() -> None:
    slot = T0 + timedelta(seconds=60)
    result = due(every(60), "s", slot, T0 + timedelta(seconds=90), timedelta(minutes=1), timedelta(0), None, None)
    assert result.fire is None


def test_after_downtime_the_latest_slot_fires_once_and_the_rest_are_one_missed_row() -> None:
    now = T0 + timedelta(minutes=10, seconds=30)
    result = due(every(60), "s", T0 + timedelta(minutes=1), now, timedelta(minutes=1), timedelta(0), None, None)
    assert result.fire == T0 + timedelta(minutes=10)
    assert result.missed_first == T0 + timedelta(minutes=2)
    assert result.missed_count == 8


def test_a_latest_slot_older_than_the_catchup_window_is_missed_too() -> None:
    now = T0 + timedelta(hours=6, minutes=30)
    result = due(cron("0 * * * *"), "s", T0, now, timedelta(minutes=20), timedelta(0), None, None)
    assert result.fire is None
    assert (result.missed_first, result.missed_count) == (T0 + timedelta(hours=1), 6)


def test_a_week_of_missed_one_second_slots_is_counted_without_listing_them() -> None:
    now = T0 + timedelta(days=7)
    result = due(every(1), "s", T0, now, timedelta(seconds=1), timedelta(0), None, None)
    assert result.fire == now
    assert result.missed_count == 7 * 86400 - 1


def test_a_month_of_missed_cron_slots_is_counted_exactly_across_dst() -> None:
    anchor, now = at("2026-10-01T00:00Z"), at("2026-11-01T00:00Z")
    c = cron("*/5 * * * *", "Europe/Berlin", anchor)
    result = due(c, "s", None, now, timedelta(hours=1), timedelta(0), None, None)
    assert result.fire == now
    # 31 days of 5-minute instants, less the repeated hour of 2026-10-25 (02:00-02:59 fires in CEST only).
    assert result.missed_count + 1 == 31 * 288 - 12 == len(list(slots_after(c, anchor, now)))


def test_a_month_of_missed_minute_slots_over_spring_forward_loses_no_real_minute() -> None:
    anchor, now = at("2026-03-15T00:00Z"), at("2026-04-15T00:00Z")
    c = cron("* * * * *", "Europe/Berlin", anchor)
    result = due(c, "s", None, now, timedelta(hours=1), timedelta(0), None, None)
    # The skipped wall-clock hour 02:00-02:59 collapses into 03:00 CEST, which is a real minute anyway.
    assert result.missed_count + 1 == 31 * 1440


def test_slots_outside_start_and_end_are_not_due() -> None:
    c = cron("0 * * * *")
    start_at, end_at = T0 + timedelta(hours=3), T0 + timedelta(hours=5)
    early = due(
        c, "s", None, T0 + timedelta(hours=2, minutes=30), timedelta(hours=1), timedelta(0), start_at, end_at
    )
    assert early.fire is None
    late = due(c, "s", None, T0 + timedelta(hours=9), timedelta(hours=9), timedelta(0), start_at, end_at)
    assert late.fire == T0 + timedelta(hours=5)
    assert (late.missed_first, late.missed_count) == (T0 + timedelta(hours=3), 2)


def test_a_jittered_slot_fires_only_after_its_delay() -> None:
    c = every(3600)
    slot = T0 + timedelta(hours=1)
    delay = jitter_for("s", slot, timedelta(minutes=30))
    assert delay > timedelta(0)
    before = due(
        c,
        "s",
        None,
        slot + delay - timedelta(microseconds=1),
        timedelta(hours=1),
        timedelta(minutes=30),
        None,
        None,
    )
    on_time = due(c, "s", None, slot + delay, timedelta(hours=1), timedelta(minutes=30), None, None)
    assert before.fire is None
    assert on_time.fire == slot


# -- overlap


@pytest.mark.parametrize(
    ("policy", "previous_running", "already_buffered", "action"),
    [
        (OverlapPolicy.SKIP, False, False, OverlapAction.FIRE),
        (OverlapPolicy.BUFFER_ONE, False, True, OverlapAction.FIRE),
        (OverlapPolicy.CANCEL_OTHER, False, False, OverlapAction.FIRE),
        (OverlapPolicy.SKIP, True, False, OverlapAction.SKIP),
        (OverlapPolicy.BUFFER_ONE, True, False, OverlapAction.BUFFER),
        (OverlapPolicy.BUFFER_ONE, True, True, OverlapAction.SKIP),
        (OverlapPolicy.CANCEL_OTHER, True, False, OverlapAction.CANCEL_PREVIOUS_AND_FIRE),
        (OverlapPolicy.CANCEL_OTHER, True, True, OverlapAction.CANCEL_PREVIOUS_AND_FIRE),
    ],
)
def test_on_overlap_follows_the_policy_only_while_the_previous_parent_runs(
    policy: OverlapPolicy, previous_running: bool, already_buffered: bool, action: OverlapAction
) -> None:
    assert on_overlap(policy, previous_running, already_buffered) is action


# -- properties

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
CRONS = ["*/15 2 * * *", "30 1 * * *", "0 * * * *", "*/7 * * * *", "0 2 * * 0", "@daily", "5 1,2,3 * * *"]
# Around the 2026 change days, so the properties meet gaps and repeats.
instants = st.sampled_from(
    [at("2026-03-07T12:00Z"), at("2026-03-28T12:00Z"), at("2026-10-24T12:00Z"), at("2026-10-31T12:00Z")]
).flatmap(lambda base: st.integers(0, 3 * 86400).map(lambda s: base + timedelta(seconds=s)))
cadences = st.one_of(
    st.builds(cron, st.sampled_from(CRONS), st.sampled_from(ZONES), st.just(T0)),
    st.builds(every, st.integers(30, 7200), st.just(at("2026-03-07T00:00:00.5Z"))),
)
PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(c=cadences, after=instants, hours=st.integers(1, 30))
def test_slots_are_strictly_increasing_and_after_the_start(c: Cadence, after: datetime, hours: int) -> None:
    slots = list(itertools.islice(slots_after(c, after, after + timedelta(hours=hours)), 2000))
    assert all(a < b for a, b in itertools.pairwise(slots))
    assert all(after < s <= after + timedelta(hours=hours) for s in slots)


@PROPERTY
@given(c=cadences, after=instants)
def test_next_slot_is_the_first_of_slots_after_and_nothing_lies_between(c: Cadence, after: datetime) -> None:
    first = next_slot(c, after)
    assert list(slots_after(c, after, first)) == [first]
    following = next_slot(c, first)
    assert list(slots_after(c, after, following)) == [first, following]


@PROPERTY
@given(key=st.text(max_size=20), slot=instants, jitter_us=st.integers(0, 10**10))
def test_jitter_is_within_bounds_and_deterministic(key: str, slot: datetime, jitter_us: int) -> None:
    jitter = timedelta(microseconds=jitter_us)
    delay = jitter_for(key, slot, jitter)
    assert delay == jitter_for(key, slot, jitter)
    assert timedelta(0) <= delay <= jitter
    assert delay < jitter or jitter == timedelta(0)


@PROPERTY
@given(
    c=cadences,
    last=instants,
    gap_seconds=st.integers(0, 3 * 86400),
    catchup_seconds=st.integers(1, 7200),
    jitter_seconds=st.integers(0, 600),
)
def test_due_fires_at_most_the_latest_due_slot_within_catchup_and_misses_the_older_ones(
    c: Cadence, last: datetime, gap_seconds: int, catchup_seconds: int, jitter_seconds: int
) -> None:
    now = last + timedelta(seconds=gap_seconds)
    catchup, jitter = timedelta(seconds=catchup_seconds), timedelta(seconds=jitter_seconds)
    result = due(c, "key", last, now, catchup, jitter, None, None)
    candidates = list(slots_after(c, last, now))
    due_slots = list(itertools.takewhile(lambda s: s + jitter_for("key", s, jitter) <= now, candidates))
    assert result.missed_count + (result.fire is not None) == len(due_slots)
    if result.fire is not None:
        assert result.fire == due_slots[-1]
        assert now - (result.fire + jitter_for("key", result.fire, jitter)) <= catchup
    elif due_slots:
        assert now - (due_slots[-1] + jitter_for("key", due_slots[-1], jitter)) > catchup
    if result.missed_count:
        assert result.missed_first == due_slots[0]
        assert result.fire is None or result.missed_first < result.fire
