"""Unit tests of dbmaint.cron_words: the CLI's cron expressions in words."""

from __future__ import annotations

import pytest

from dbmaint import cron_words
from dbmaint.cron_words import describe
from manager_service import schedule_rules


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("*/15 2 * * *", "every 15 minutes during 02:00-02:59"),
        ("*/5 9-17 * * 1-5", "every 5 minutes during 09:00-17:59 Monday to Friday"),
        ("0 * * * *", "every hour on the hour"),
        ("@hourly", "every hour on the hour"),
        ("30 */6 * * *", "every 6 hours at minute 30"),
        ("15 8-18 * * *", "every hour at minute 15 during 08:00-18:59"),
        ("0 2 * * *", "at 02:00 every day"),
        ("@daily", "at 00:00 every day"),
        ("0 2,14 * * *", "at 02:00 and 14:00 every day"),
        ("0,30 1 * * *", "at 01:00 and 01:30 every day"),
        ("30 3 * * 0", "at 03:30 on Sunday"),
        ("30 3 * * 7", "at 03:30 on Sunday"),
        ("30 3 * * SUN", "at 03:30 on Sunday"),
        ("@weekly", "at 00:00 on Sunday"),
        ("0 2 * * mon-fri", "at 02:00 Monday to Friday"),
        ("0 2 * * 1,3,5", "at 02:00 on Monday, Wednesday and Friday"),
        ("0 0 1 * *", "at 00:00 on day 1 of every month"),
        ("0 4 1,15 * *", "at 04:00 on days 1 and 15 of every month"),
        ("@yearly", "at 00:00 on 1 January"),
        ("0 6 * 7,8 *", "at 06:00 every day in July and August"),
        ("  0   2 *  * * ", "at 02:00 every day"),
    ],
)
def test_common_shapes_read_as_words(cron: str, words: str) -> None:
    assert describe(cron) == words


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 L * *",  # last day of the month
        "0 0 * * MON#2",  # second Monday
        "0 0 */2 * *",  # every other day
        "0 0 1 * 1",  # day 1 or Monday (cron's OR rule)
        "*/10 1,3 * * *",  # steps in hours that are not a span
        "0,15,30,45 1,2 * * *",  # more than four times a day
        "1-59/2 * * * *",  # a stepped range
        "0 25 * * *",  # out of range
        "@reboot",
        "* * * *",
    ],
)
def test_exotic_shapes_fall_back_to_the_expression(cron: str) -> None:
    assert describe(cron) == cron


def test_the_manager_checks_crons_with_the_same_alias_table() -> None:
    assert schedule_rules.CRON_ALIASES is cron_words.CRON_ALIASES
