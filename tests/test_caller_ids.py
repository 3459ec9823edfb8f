"""Picking a caller ID from a pool (pure): local presence, least used, caps and rest."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.campaigns.caller_id_pools import should_rest
from dialer.campaigns.caller_ids import PoolChooser, PoolNumber, where_is


def number(n: int, e164: str, **kw) -> PoolNumber:
    country, regions, area = where_is(e164)
    return PoolNumber(n, e164, country, regions, area, **kw)


POOL = [
    number(1, "+12125550100"),  # New York, area 212
    number(2, "+12125550101"),  # New York, area 212
    number(3, "+13105550100"),  # California (Los Angeles), area 310
    number(4, "+16135550100"),  # Ontario, Canada
    number(5, "+19025550100"),  # Nova Scotia and Prince Edward Island
    number(6, "+442071234567", is_default=True),  # London: the default
]

PICK_CASES = [
    ("same area code", "+12125559999", {1, 2}),
    ("same state, other area code (646 is New York)", "+16465550123", {1, 2}),
    ("same state, California", "+14155550123", {3}),
    ("same country, no number in its state (Texas)", "+12145550123", {1, 2, 3}),
    ("Canada: the province", "+16475550123", {4}),
    ("a Prince Edward Island number: 902 serves both", "+19025559999", {5}),
    ("no number in its country: the default", "+4930123456", {6}),
    ("a UK number: its country", "+447400123456", {6}),
]  # fmt: skip


@pytest.mark.parametrize(("callee", "allowed"), [c[1:] for c in PICK_CASES],
                         ids=[c[0] for c in PICK_CASES])  # fmt: skip
def test_local_presence(callee: str, allowed: set[int]) -> None:
    chooser = PoolChooser([PoolNumber(**{f: getattr(n, f) for f in n.__slots__}) for n in POOL], 10)
    assert chooser.pick(callee).id in allowed


def test_least_used_today_first_and_lowest_id_among_equals() -> None:
    chooser = PoolChooser([number(1, "+12125550100", calls_today=3),
                           number(2, "+12125550101", calls_today=1),
                           number(3, "+12125550102", calls_today=1)], 10)  # fmt: skip
    picks = [chooser.pick("+12125559999").id for _ in range(6)]
    assert picks == [2, 3, 2, 3, 1, 2]


def test_never_past_the_daily_cap_then_the_next_tier_then_none() -> None:
    chooser = PoolChooser([number(1, "+12125550100", calls_today=1),
                           number(2, "+13105550100", is_default=True)], 3)  # fmt: skip
    picks = [getattr(chooser.pick("+12125559999"), "id", None) for _ in range(6)]
    assert picks == [1, 1, 2, 2, 2, None]
    assert chooser.exhausted


def test_a_resting_number_is_never_picked() -> None:
    chooser = PoolChooser([number(1, "+12125550100", resting=True),
                           number(2, "+13105550100")], 5)  # fmt: skip
    assert {chooser.pick("+12125559999").id for _ in range(5)} == {2}
    assert chooser.pick("+12125559999") is None


def test_no_default_and_no_local_number_waits() -> None:
    chooser = PoolChooser([number(1, "+12125550100")], 5)
    assert chooser.pick("+4930123456") is None
    assert chooser.pick("+13055550100").id == 1  # same country


REST_CASES = [
    ("far below after enough calls", 60, 0.05, 0.30, 0.5, 50, True),
    ("below, but too few calls", 20, 0.0, 0.30, 0.5, 50, False),
    ("under the pool but above half of it", 60, 0.20, 0.30, 0.5, 50, False),
    ("resting disabled", 60, 0.0, 0.30, 0.0, 50, False),
    ("a pool nobody answers says nothing", 60, 0.0, 0.0, 0.5, 50, False),
]  # fmt: skip


@pytest.mark.parametrize(("sent", "rate", "pool", "below", "min_calls", "expected"),
                         [c[1:] for c in REST_CASES], ids=[c[0] for c in REST_CASES])  # fmt: skip
def test_should_rest(sent, rate, pool, below, min_calls, expected) -> None:
    assert should_rest(sent, rate, pool, below=below, min_calls=min_calls) is expected


AREAS = ["+1212", "+1646", "+1310", "+1415", "+1214", "+1613", "+1902", "+4420", "+4930"]
TAILS = itertools.count(1000000)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(AREAS), st.integers(0, 4), st.booleans()), min_size=1,
             max_size=12),
    st.integers(1, 5),
    st.lists(st.sampled_from(AREAS), min_size=1, max_size=60),
    st.one_of(st.none(), st.integers(0, 11)),
)  # fmt: skip
def test_picks_never_pass_a_cap_nor_use_a_resting_number_and_are_the_most_local(
    pool_spec, cap, callees, default_index
) -> None:
    numbers = [
        number(i, f"{area}{next(TAILS)}", calls_today=used, resting=resting,
               is_default=(i == default_index))
        for i, (area, used, resting) in enumerate(pool_spec)
    ]  # fmt: skip
    chooser = PoolChooser(
        [PoolNumber(**{f: getattr(n, f) for f in n.__slots__}) for n in numbers], cap
    )
    used = {n.id: n.calls_today for n in numbers}
    for area in callees:
        callee = f"{area}5550123"
        picked = chooser.pick(callee)
        usable = [n for n in numbers if not n.resting and used[n.id] < cap]
        tiers = _tiers(callee, usable)
        if picked is None:
            assert not any(tiers), "a usable number was left unused"
            continue
        assert not picked.resting and used[picked.id] < cap
        best = next(t for t in tiers if t)
        assert picked.id in {n.id for n in best}, "a more local number was usable"
        assert used[picked.id] == min(used[n.id] for n in best), "not the least used"
        used[picked.id] += 1
    assert all(
        count <= max(cap, n.calls_today) for n, count in zip(numbers, used.values(), strict=True)
    )


def _tiers(callee: str, usable: list[PoolNumber]) -> list[list[PoolNumber]]:
    country, regions, area = where_is(callee)
    return [
        [n for n in usable if area and n.area == area],
        [n for n in usable if n.regions & regions],
        [n for n in usable if country and n.country == country],
        [n for n in usable if n.is_default],
    ]
