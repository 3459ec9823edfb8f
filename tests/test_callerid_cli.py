"""`dialer callerid` through the command runner: pools, numbers (all of a file or none), rest
and restore, and every bad input refused with its field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support_celery import scalar


def numbers(session_factory) -> int:
    return scalar(session_factory, "SELECT count(*) FROM caller_ids")


def test_pools_numbers_rest_and_restore(dialer, session_factory, tmp_path: Path) -> None:
    dialer("callerid", "pool", "add", "east", "--daily-cap", "200", "--cap-zone",
           "America/New_York", "--rest-below", "0.4", "--rest-for", "2d")  # fmt: skip
    dialer("callerid", "add", "east", "+12125550100", "(305) 555-0100")
    dialer("callerid", "add", "east", "+12025550199", "--default")
    listed = json.loads(dialer("callerid", "list", "east", "--json").output)
    assert [(n["number"], n["default"], n["calls_today"]) for n in listed] == [
        ("+12025550199", True, 0), ("+12125550100", False, 0), ("+13055550100", False, 0)]  # fmt: skip
    [pool] = json.loads(dialer("callerid", "pool", "list", "--json").output)
    assert (pool["daily_cap"], pool["cap_zone"], pool["rest_below"], pool["rest_for"]) == (
        200, "America/New_York", 0.4, "2d")  # fmt: skip

    dialer("callerid", "rest", "east", "+12125550100", "--for", "4h", "--reason", "spam label")
    health = json.loads(dialer("callerid", "health", "--pool", "east", "--json").output)
    resting = {h["number"]: h["rest_reason"] for h in health if h["resting"]}
    assert resting == {"+12125550100": "spam label"}
    dialer("callerid", "restore", "east", "+12125550100")
    assert not any(h["resting"] for h in json.loads(
        dialer("callerid", "health", "--json").output))  # fmt: skip

    good = tmp_path / "more.csv"
    good.write_text("number,default\n+14155550100,\n+16135550100,yes\n", encoding="utf-8")
    dialer("callerid", "import", "east", str(good))
    assert numbers(session_factory) == 5
    listed = {
        n["number"]: n["default"]
        for n in json.loads(dialer("callerid", "list", "east", "--json").output)
    }
    assert [n for n, default in listed.items() if default] == ["+16135550100"]
    dialer("callerid", "remove", "east", "+14155550100")
    assert numbers(session_factory) == 4


BAD = [
    ("a number that is not one", ("add", "east", "+1999"), "number: '+1999'"),
    ("a number already in the pool", ("add", "east", "+12125550100"), "already in pool 'east'"),
    ("two defaults at once", ("add", "east", "+13055550100", "+14155550100", "--default"),
     "default: give exactly one number"),
    ("an unknown pool", ("add", "west", "+13055550100"), "no caller ID pool named 'west'"),
    ("a zero cap", ("pool", "add", "x", "--daily-cap", "0"), "daily_cap: must be greater than"),
    ("no cap", ("pool", "add", "x"), "daily_cap: is required"),
    ("a zone that is not one", ("pool", "add", "x", "--daily-cap", "5", "--cap-zone", "Mars/Base"),
     "cap_zone: 'Mars/Base' is not a time zone"),
    ("a ratio of 1", ("pool", "set", "east", "--rest-below", "1"), "rest_below: '1' must be"),
    ("a bad window", ("pool", "set", "east", "--rest-window", "soon"), "rest_window: 'soon'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_refused_naming_its_field(dialer, session_factory, args, message) -> None:
    dialer("callerid", "pool", "add", "east", "--daily-cap", "10")
    dialer("callerid", "add", "east", "+12125550100")
    assert message in dialer("callerid", *args, ok=False).output
    assert numbers(session_factory) == 1
    assert scalar(session_factory, "SELECT count(*) FROM caller_id_pools") == 1


def test_an_import_with_a_bad_line_loads_nothing(dialer, session_factory, tmp_path: Path) -> None:
    dialer("callerid", "pool", "add", "east", "--daily-cap", "10")
    bad = tmp_path / "numbers.csv"
    bad.write_text("number,default\n+12125550100,\nnope,\n+13055550100,yes\n+14155550100,yes\n"
                   "+12125550100,\n", encoding="utf-8")  # fmt: skip
    result = dialer("callerid", "import", "east", str(bad), ok=False)
    assert "line 3: number: 'nope'" in result.output
    assert "line 5: default: only one default per pool" in result.output
    assert "nothing was loaded" in result.output
    assert numbers(session_factory) == 0


def test_a_campaign_takes_a_pool_and_its_default_as_its_own_caller_id(dialer) -> None:
    dialer("trunk", "add", "MC", "--cps", "10", "--max-channels", "10")
    dialer("callerid", "pool", "add", "east", "--daily-cap", "10")
    assert "pool 'east' has no numbers" in dialer(
        "campaign", "create", "c", "--trunk", "MC", "--caller-id-pool", "east", "--ivr-file", "w",
        ok=False).output  # fmt: skip
    dialer("callerid", "add", "east", "+12125550100")
    dialer("callerid", "add", "east", "+12025550199", "--default")
    created = json.loads(dialer("campaign", "create", "c", "--trunk", "MC", "--caller-id-pool",
                                "east", "--ivr-file", "w", "--alt-numbers", "--json").output)  # fmt: skip
    assert (created["caller_id"], created["caller_id_pool"], created["alt_numbers"]) == (
        "+12025550199", "east", True)  # fmt: skip
    cleared = json.loads(dialer("campaign", "set", "c", "--caller-id-pool", "", "--json").output)
    assert cleared["caller_id_pool"] is None
