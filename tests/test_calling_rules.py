"""Region calling rules, holidays and frequency rules as pure functions: tables of known cases,
then properties over random rules, time zones and DST changes.

The window properties compare against a brute-force check of every minute: each rule, the
campaign's hours and the guard judged on their own, in every zone (rule edges, UTC offsets and
DST changes since 2000 fall on whole minutes).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.campaigns import frequency, regions
from dialer.campaigns.calling_rules import Holiday, HoursRule, RuleBook
from dialer.campaigns.calling_window import (
    GUARD_END,
    GUARD_START,
    CallingWindow,
    Schedule,
    is_open,
    next_open,
)
from dialer.campaigns.frequency import FrequencyRule, held_until

UTC = dt.UTC
NY = "America/New_York"
T = dt.time.fromisoformat
ALL_DAYS = frozenset(range(1, 8))


def local(zone: str, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone))


def hours(scope: str, value: str, days: set[int], start: str, end: str) -> HoursRule:
    return HoursRule(scope, value, frozenset(days), T(start), T(end))


# -- schedules --------------------------------------------------------------------------------


def test_stretches_of_one_scope_add_up_and_days_not_named_are_closed() -> None:
    schedule = Schedule.weekly([({1, 2}, T("09:00"), T("12:00")), ({1}, T("11:00"), T("15:00"))])
    assert schedule.week[0] == ((T("09:00"), T("15:00")),)
    assert schedule.week[1] == ((T("09:00"), T("12:00")),)
    assert schedule.week[2:] == ((),) * 5


def test_the_guard_narrows_every_stretch() -> None:
    schedule = Schedule.weekly([({1}, T("06:00"), T("23:00")), ({2}, T("21:00"), T("23:00"))])
    assert schedule.week[0] == ((GUARD_START, GUARD_END),)
    assert schedule.week[1] == ()


def test_intersection_keeps_what_both_allow_and_every_closed_date() -> None:
    a = Schedule.weekly([(ALL_DAYS, T("09:00"), T("12:00")), ({1}, T("14:00"), T("18:00"))],
                        [dt.date(2027, 1, 1)])  # fmt: skip
    b = Schedule.weekly([({1, 2}, T("10:00"), T("16:00"))], [dt.date(2027, 7, 5)])
    both = a.intersect(b)
    assert both.week[0] == ((T("10:00"), T("12:00")), (T("14:00"), T("16:00")))
    assert both.week[1] == ((T("10:00"), T("12:00")),)
    assert both.week[2] == ()
    assert both.closed_dates == {dt.date(2027, 1, 1), dt.date(2027, 7, 5)}


def test_a_holiday_closes_its_local_date_and_the_window_opens_the_next_day() -> None:
    schedule = CallingWindow(T("09:00"), T("20:00"), ALL_DAYS).schedule().intersect(
        Schedule(Schedule.always().week, frozenset({dt.date(2027, 1, 1)}))
    )  # fmt: skip
    at = local(NY, 2027, 1, 1, 12, 0)
    assert not is_open(schedule, [NY], at)
    assert next_open(schedule, [NY], at) == local(NY, 2027, 1, 2, 9, 0)
    # The same UTC instant is still 31 December in Honolulu: no holiday there yet.
    assert is_open(schedule, ["Pacific/Honolulu"], local(NY, 2027, 1, 1, 0, 30))
    assert next_open(schedule, ["Pacific/Honolulu"], local("Pacific/Honolulu", 2026, 12, 31, 21, 0)) \
        == local("Pacific/Honolulu", 2027, 1, 2, 9, 0)  # fmt: skip


def test_two_stretches_a_day_open_in_the_second_after_the_first() -> None:
    schedule = Schedule.weekly(
        [(ALL_DAYS, T("09:00"), T("11:00")), (ALL_DAYS, T("14:00"), T("16:00"))]
    )
    assert next_open(schedule, [NY], local(NY, 2027, 3, 2, 11, 0)) == local(NY, 2027, 3, 2, 14, 0)


# -- rule books -------------------------------------------------------------------------------

BOOK = RuleBook(
    [
        hours("country", "US", set(range(1, 6)), "08:00", "21:00"),
        hours("country", "US", {6}, "09:00", "17:00"),
        hours("region", "US-TX", set(range(1, 6)), "09:00", "20:00"),
        hours("area_code", "+1415", set(range(1, 7)), "10:00", "19:00"),
        hours("region", "CA-NS", set(range(1, 8)), "10:00", "18:00"),
        hours("region", "CA-PE", set(range(1, 8)), "09:00", "17:00"),
        hours("country", "GB", set(range(1, 7)), "09:00", "20:00"),
    ],
    [Holiday("region", "US-CA", dt.date(2027, 3, 31)), Holiday("area_code", "+44", dt.date(2027, 1, 1))],
    version=3,
)  # fmt: skip

SCOPES_CASES = [
    ("a Texas number: its country and its state", "+12145550100",
     (("country", "US"), ("region", "US-TX"))),
    ("a San Francisco number: country, state (a holiday), area code", "+14155550100",
     (("area_code", "+1415"), ("country", "US"), ("region", "US-CA"))),
    ("a New York number: the country alone", "+12125550100", (("country", "US"),)),
    ("902 serves Nova Scotia and Prince Edward Island: both", "+19025550100",
     (("region", "CA-NS"), ("region", "CA-PE"))),
    ("a UK mobile: country and the +44 prefix", "+447700900123",
     (("area_code", "+44"), ("country", "GB"))),
    ("Guernsey shares +44 but is not GB", "+447911123456", (("area_code", "+44"),)),
    ("a German number: no rule", "+4930123456", ()),
]  # fmt: skip


@pytest.mark.parametrize(("phone", "expected"), [c[1:] for c in SCOPES_CASES],
                         ids=[c[0] for c in SCOPES_CASES])  # fmt: skip
def test_scopes_of_a_number(phone: str, expected: tuple) -> None:
    assert BOOK.scopes_for(phone) == expected


def test_a_number_in_several_regions_gets_the_strictest_hours() -> None:
    schedule = BOOK.schedule_for("+19025550100")
    assert schedule is not None
    assert set(schedule.week) == {((T("10:00"), T("17:00")),)}


def test_the_state_is_stricter_than_the_country_on_weekdays_and_closes_its_saturday() -> None:
    schedule = BOOK.schedule_for("+12145550100")
    assert schedule is not None
    assert schedule.week[0] == ((T("09:00"), T("20:00")),)
    assert schedule.week[5] == ()  # Texas names no Saturday hours
    assert schedule.week[6] == ()  # nor does the country for Sunday


def test_an_unknown_region_in_its_country_takes_every_region_of_it() -> None:
    assert regions.regions_of("+18005550100") == regions.REGIONS["US"]
    assert regions.regions_of("+4930123456") == frozenset()


def test_an_empty_book_applies_nothing() -> None:
    book = RuleBook()
    assert book.empty and book.scopes_for("+12125550100") == () and book.schedule(()) is None


# -- frequency --------------------------------------------------------------------------------

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
SEVEN_IN_SEVEN = FrequencyRule("seven", max_attempts=7, period=7 * D)
REST = FrequencyRule("rest", after_conversation=4 * H)

HELD_CASES = [
    ("no history: free", [SEVEN_IN_SEVEN], [], [], None),
    ("six in the period: free", [SEVEN_IN_SEVEN], [NOW - i * D for i in range(6)], [], None),
    ("seven in the period: held until the oldest leaves it", [SEVEN_IN_SEVEN],
     [NOW - i * D - H for i in range(7)], [], (NOW - 6 * D - H + 7 * D, "seven")),
    ("one sent exactly a period ago no longer counts", [FrequencyRule("one", 1, D)],
     [NOW - D], [], None),
    ("nine sent: held until enough of them leave", [FrequencyRule("two", 2, D)],
     [NOW - i * H for i in range(1, 10)], [], (NOW - 2 * H + D, "two")),
    ("a conversation 1 h ago under a 4 h rest", [REST], [], [NOW - H], (NOW + 3 * H, "rest")),
    ("a conversation 5 h ago: free", [REST], [], [NOW - 5 * H], None),
    ("both rules: the longer hold wins", [REST, FrequencyRule("one", 1, 2 * H)],
     [NOW - H], [NOW - H], (NOW + 3 * H, "rest")),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "sent", "talks", "expected"), [c[1:] for c in HELD_CASES],
                         ids=[c[0] for c in HELD_CASES])  # fmt: skip
def test_held_until(rules, sent, talks, expected) -> None:
    assert held_until(rules, NOW, sent, talks) == expected


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_attempts": 3}, {"period": D}, {"max_attempts": 0, "period": D},
     {"max_attempts": 2, "period": D, "after_conversation": H}, {"after_conversation": -H}],
)  # fmt: skip
def test_a_frequency_rule_must_be_one_kind_and_positive(kwargs) -> None:
    with pytest.raises(ValueError, match="frequency rule 'r'"):
        FrequencyRule("r", **kwargs)


def test_conversation_outcomes_are_outcomes() -> None:
    from dialer.outcomes.rules import Outcome

    assert set(frequency.CONVERSATION_OUTCOMES) <= {o.value for o in Outcome}


# -- properties -------------------------------------------------------------------------------

ZONES = [NY, "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe", "America/St_Johns",
         "Pacific/Chatham", "Asia/Kolkata", "America/Santiago", "Etc/GMT+5"]  # fmt: skip
MINUTE = dt.timedelta(minutes=1)
times = st.integers(0, 24 * 60 - 1).map(lambda m: dt.time(m // 60, m % 60))
stretch = st.tuples(st.frozensets(st.integers(1, 7), min_size=1), times, times).filter(
    lambda s: s[1] < s[2]
)
# Instants near DST changes of the zones above, and anywhere else.
instants = st.one_of(
    st.sampled_from([dt.datetime(2027, 3, 14, 6, 0, tzinfo=UTC), dt.datetime(2027, 11, 7, 5, 0, tzinfo=UTC),
                     dt.datetime(2027, 3, 28, 0, 30, tzinfo=UTC), dt.datetime(2027, 4, 4, 15, 0, tzinfo=UTC),
                     dt.datetime(2027, 9, 26, 14, 0, tzinfo=UTC)]),  # fmt: skip
    st.integers(int(dt.datetime(2026, 1, 1, tzinfo=UTC).timestamp()) // 60,
                int(dt.datetime(2030, 1, 1, tzinfo=UTC).timestamp()) // 60).map(
        lambda m: dt.datetime.fromtimestamp(m * 60, UTC)),
)  # fmt: skip


@st.composite
def rule_sets(draw):
    """A campaign window, 1-3 scopes of hour stretches, and holidays near the instant."""
    at = draw(instants)
    window = CallingWindow(*sorted(draw(st.tuples(times, times).filter(lambda t: t[0] != t[1]))),
                           draw(st.frozensets(st.integers(1, 7), min_size=1)))  # fmt: skip
    scopes = draw(st.lists(st.lists(stretch, min_size=1, max_size=3), min_size=1, max_size=3))
    holidays = draw(
        st.frozensets(st.integers(-1, 10).map(lambda d: (at + d * D).date()), max_size=4)
    )
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True))
    return at, window, scopes, holidays, zones


def _allowed_by_all(at, window, scopes, holidays, zones) -> bool:
    """Each rule judged on its own, in every zone: the definition the schedule must meet."""
    for zone in zones:
        moment = at.astimezone(zoneinfo.ZoneInfo(zone))
        wall, day, weekday = moment.time(), moment.date(), moment.isoweekday()
        if not (GUARD_START <= wall < GUARD_END) or day in holidays:
            return False
        if weekday not in window.days or not window.start <= wall < window.end:
            return False
        for stretches in scopes:
            if not any(weekday in d and s <= wall < e for d, s, e in stretches):
                return False
    return True


def _combined(window, scopes, holidays) -> Schedule:
    schedule = window.schedule()
    for i, stretches in enumerate(scopes):
        schedule = schedule.intersect(Schedule.weekly(stretches, holidays if i == 0 else ()))
    return schedule


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets())
def test_no_call_is_allowed_outside_any_rule_and_next_open_is_the_first_allowed_minute(
    case,
) -> None:
    at, window, scopes, holidays, zones = case
    schedule = _combined(window, scopes, holidays)
    assert is_open(schedule, zones, at) == _allowed_by_all(at, window, scopes, holidays, zones)
    opens = next_open(schedule, zones, at)
    if opens is None:
        # Nothing within the horizon: spot-check a day of minutes.
        assert not any(_allowed_by_all(at + i * MINUTE, window, scopes, holidays, zones)
                       for i in range(0, 24 * 60, 7))  # fmt: skip
        return
    assert _allowed_by_all(opens, window, scopes, holidays, zones)
    # Every whole minute before it (from the instant's own minute) is closed.
    minute = at.replace(second=0, microsecond=0)
    steps = int((opens - minute) / MINUTE)
    for i in range(1 if minute < at else 0, min(steps, 3 * 24 * 60)):
        assert not _allowed_by_all(minute + i * MINUTE, window, scopes, holidays, zones)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(lambda n, p: FrequencyRule("a", n, dt.timedelta(minutes=p)),
                      st.integers(1, 5), st.integers(1, 600)),
            st.builds(lambda h: FrequencyRule("c", after_conversation=dt.timedelta(minutes=h)),
                      st.integers(1, 600)),
        ), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3000), st.booleans()), min_size=1, max_size=40),
)  # fmt: skip
def test_calls_made_whenever_the_rules_allow_never_exceed_a_cap(rules, wishes) -> None:
    """Callers who want to call at random minutes, each call made at its wish or when
    `held_until` says: no period ever holds more than its cap, no call follows a conversation
    too soon, and none is held when no rule is broken."""
    start = dt.datetime(2027, 1, 1, tzinfo=UTC)
    sent: list[dt.datetime] = []
    talks: list[dt.datetime] = []
    for minute, answered in sorted(wishes):
        at = max(start + minute * MINUTE, sent[-1] if sent else start)
        while (hold := held_until(rules, at, sent, talks)) is not None:
            assert hold[0] > at
            at = hold[0]
        sent.append(at)
        if answered:
            talks.append(at)
    for rule in rules:
        if rule.max_attempts is not None and rule.period is not None:
            for i, s in enumerate(sent):
                inside = [t for t in sent[: i + 1] if t > s - rule.period]
                assert len(inside) <= rule.max_attempts
        else:
            assert rule.after_conversation is not None
            for s in sent:
                assert not any(t < s < t + rule.after_conversation for t in talks)
