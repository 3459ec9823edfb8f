"""`dialer campaign watch`: the frame's numbers against a hand-counted database, the layout
from plain dicts, and the command's refresh, exit and output modes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from dialer.cli import campaign as campaign_cli
from dialer.cli import cli
from dialer.reports import queries as reports
from dialer.reports import watch
from dialer.settings import get_settings

# Times are seconds before the database's now(); None: not reached.
SEED = """
INSERT INTO trunks (id, name, cps, max_channels, next_slot_at) OVERRIDING SYSTEM VALUE
VALUES (1, 'MC', 10, 3, now() + interval '2 seconds'),
       (2, 'ALT', 5, 10, now() - interval '1 hour'),
       (3, 'IDLE', 1, 1, now());
INSERT INTO campaigns (id, name, trunk_id, status, caller_id_number, ivr_file)
OVERRIDING SYSTEM VALUE
VALUES (1, 'spring', 1, 'running', '+12125550100', 'welcome'),
       (2, 'other', 1, 'running', '+12125550100', 'welcome'),
       (3, 'done', 2, 'completed', '+12125550100', 'welcome');
INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw, status) OVERRIDING SYSTEM VALUE
VALUES (1, 1, '+12125550101', 'x', 'completed'),
       (2, 1, '+12125550102', 'x', 'pending'),
       (3, 1, '+12125550103', 'x', 'pending'),
       (4, 1, '+12125550104', 'x', 'exhausted'),
       (5, 1, '+12125550105', 'x', 'completed'),
       (6, 1, '+12125550106', 'x', 'dialing'),
       (7, 1, '+12125550107', 'x', 'dialing'),
       (8, 1, '+12125550108', 'x', 'dialing'),
       (9, 1, '+12125550109', 'x', 'dnc'),
       (10, 2, '+12125550110', 'x', 'dialing'),
       (11, 2, '+12125550111', 'x', 'completed'),
       (12, 3, '+12125550112', 'x', 'completed');
INSERT INTO pbxs (name, max_cps, max_channels, rate, rate_reason, latency_ms, latency_samples,
                  state, state_reason, state_at, heartbeat_at)
VALUES ('east', 8, 5, 4, 'slow', 900, 12, 'down', 'listener lost its AMI connection',
        now() - interval '1 minute', now());
INSERT INTO trunk_routes (trunk_id, pbx) VALUES (1, 'default'), (1, 'east'), (2, 'east')
"""
# Attempts sent through east; the others through default.
EAST = (7, 9, 11)
# id, campaign, contact, trunk, status, sent, answered, amd_status, dtmf, outcome
ATTEMPTS = [
    (1, 1, 1, 1, "ended", 300, 295, "HUMAN", "1", "transferred"),
    (2, 1, 2, 1, "ended", 200, None, None, None, "no_answer"),
    (3, 1, 3, 1, "ended", 100, None, None, None, "busy"),
    (4, 1, 4, 1, "ended", 60, 55, "MACHINE", None, "voicemail_left"),
    (5, 1, 5, 1, "ended", 30, 25, "HUMAN", None, "human_no_press"),
    (6, 1, 6, 1, "up", 2, 1, None, None, None),
    (7, 1, 7, 2, "originating", 1, None, None, None, None),  # the trunk was changed
    (8, 1, 8, 1, "queued", None, None, None, None, None),
    (9, 2, 10, 1, "up", 1, 0.5, None, None, None),
    (10, 2, 11, 1, "ended", 3, None, None, None, "busy"),
    (11, 3, 12, 2, "ended", 4000, 3990, "HUMAN", "1", "transferred"),
]

# Hand-counted from SEED and ATTEMPTS for spring, over a 5 s window.
SPRING = {
    "campaign": "spring",
    "status": "running",
    "complete": False,
    "window_seconds": 5.0,
    "contacts_total": 9,
    "contacts_remaining": 5,  # 2 pending + 3 dialing
    "contacts_done": 4,
    "progress": 0.4444,
    "contacts": {
        "pending": 2,
        "dialing": 3,
        "completed": 2,
        "exhausted": 1,
        "dnc": 1,
        "cancelled": 0,
    },
    "attempts": 8,
    "attempts_open": 3,  # 6 up, 7 originating, 8 queued
    "attempts_finished": 5,
    "attempts_sent": 7,  # all but 8
    "campaign_sent_in_window": 2,  # 6 and 7
    "campaign_cps": 0.4,
    "answer_rate": 0.6,  # 1, 4, 5 of 5 finished
    "human_rate": 0.4,  # 1, 5
    "press_rate": 0.5,  # 1 of 2 human answers
    "transfer_rate": 0.5,
    "outcomes": {
        "transferred": 1,
        "no_answer": 1,
        "busy": 1,
        "voicemail_left": 1,
        "human_no_press": 1,
    },
}
# MC: sends in the window 6, 9, 10; open 6, 8 (queued), 9 (other campaign). ALT: 7.
SPRING_TRUNKS = [
    {
        "trunk": "ALT",
        "enabled": True,
        "cps_limit": 5.0,
        "max_channels": 10,
        "sent_in_window": 1,
        "current_cps": 0.2,
        "open_channels": 1,
        "queued": 0,
        "campaign_open_channels": 1,
        "slots_ahead_seconds": 0.0,
        "waiting_for_pbx": True,  # its only PBX, east, is down
    },
    {
        "trunk": "MC",
        "enabled": True,
        "cps_limit": 10.0,
        "max_channels": 3,
        "sent_in_window": 3,
        "current_cps": 0.6,
        "open_channels": 3,
        "queued": 1,
        "campaign_open_channels": 2,
        "waiting_for_pbx": False,  # default's state is unknown (no listener): usable
    },
]
# default: sends 6, 10; open 6, 8. east: sends 7, 9; open 7, 9 (other campaign).
SPRING_PBXS = [
    {
        "pbx": "default",
        "state": "unknown",
        "state_reason": None,
        "max_cps": 1000.0,
        "rate": 1000.0,
        "rate_reason": None,
        "latency_ms": None,
        "latency_samples": None,
        "latency_threshold_ms": 500,
        "current_cps": 0.4,
        "open_channels": 2,
        "max_channels": 10000,
        "campaign_open_channels": 2,
    },
    {
        "pbx": "east",
        "state": "down",  # reported over a minute ago, by a listener alive now
        "state_reason": "listener lost its AMI connection",
        "max_cps": 8.0,
        "rate": 4.0,
        "rate_reason": "slow",
        "latency_ms": 900.0,
        "latency_samples": 12,
        "latency_threshold_ms": 500,
        "current_cps": 0.4,
        "open_channels": 2,
        "max_channels": 5,
        "campaign_open_channels": 1,
    },
]


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    with engine.begin() as conn:
        for statement in SEED.split(";"):
            conn.execute(text(statement))
        for aid, campaign, contact, trunk, status, sent, answered, amd, dtmf, outcome in ATTEMPTS:
            conn.execute(
                text(
                    """
                    INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id,
                        trunk_id, attempt_number, status, queued_at, sent_at, answered_at,
                        ended_at, amd_status, dtmf, outcome)
                    OVERRIDING SYSTEM VALUE
                    VALUES (:id, '1_' || :id, :campaign, :contact, :trunk, 1, :status,
                        now() - make_interval(secs => coalesce(:sent, 0) + 1),
                        now() - make_interval(secs => :sent),
                        now() - make_interval(secs => :answered),
                        CASE WHEN :status = 'ended' THEN now() END,
                        :amd, :dtmf, :outcome)
                    """
                ),
                {
                    "id": aid,
                    "campaign": campaign,
                    "contact": contact,
                    "trunk": trunk,
                    "status": status,
                    "sent": sent,
                    "answered": answered,
                    "amd": amd,
                    "dtmf": dtmf,
                    "outcome": outcome,
                },
            )
        conn.execute(text("UPDATE call_attempts SET pbx = 'east' WHERE id = ANY(:ids)"),
                     {"ids": list(EAST)})  # fmt: skip
    return engine


@pytest.fixture
def cli_env(database_url: str, seeded: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DIALER_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def _numbers(frame: dict[str, Any]) -> dict[str, Any]:
    return {key: frame[key] for key in SPRING}


def _trunks(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The trunk rows, MC's pacing lead checked apart (it shrinks as the clock runs)."""
    rows = [dict(t) for t in frame["trunks"]]
    mc = next(t for t in rows if t["trunk"] == "MC")
    assert 1.0 < mc.pop("slots_ahead_seconds") <= 2.0
    return rows


# -- the numbers --------------------------------------------------------------------------------


def test_frame_equals_hand_counted_values(seeded: Engine) -> None:
    with seeded.connect() as conn:
        frame = reports.watch_frame(conn, "spring", window_seconds=5)
    assert _numbers(frame) == SPRING
    assert _trunks(frame) == SPRING_TRUNKS
    assert frame["pbxs"] == SPRING_PBXS
    assert isinstance(frame["at"], dt.datetime)


def test_frame_of_a_finished_campaign_is_complete(seeded: Engine) -> None:
    with seeded.connect() as conn:
        frame = reports.watch_frame(conn, "done", window_seconds=5)
    assert frame["complete"] is True
    assert (frame["contacts_done"], frame["progress"], frame["outcomes"]) == (
        1,
        1.0,
        {"transferred": 1},
    )
    # Its trunk is shown; 7 is spring's call, sent 1 s ago.
    [alt] = frame["trunks"]
    assert (alt["trunk"], alt["current_cps"], alt["campaign_open_channels"]) == ("ALT", 0.2, 0)


def test_frame_of_an_unknown_campaign_raises(seeded: Engine) -> None:
    with seeded.connect() as conn, pytest.raises(reports.CampaignNotFound):
        reports.watch_frame(conn, "winter")


# -- the layout ---------------------------------------------------------------------------------

FRAME: dict[str, Any] = {
    **SPRING,
    "at": dt.datetime(2026, 3, 2, 10, 0, 5, tzinfo=dt.UTC),
    "trunks": [
        {**SPRING_TRUNKS[0], "slots_ahead_seconds": 0.0},
        {**SPRING_TRUNKS[1], "slots_ahead_seconds": 1.5},
    ],
    "pbxs": SPRING_PBXS,
}

EXPECTED = """\
spring  running  2026-03-02 10:00:05+00:00
progress  [#############-----------------] 44.4%  4 of 9 contacts done, 5 remaining
contacts  pending 2  dialing 3  completed 2  exhausted 1  dnc 1  cancelled 0
attempts  8 (3 open, 5 finished)   sending 0.4/s over 5 s
rates     answer 60.0%  human 40.0%  press 50.0%  transfer 50.0%

TRUNK  CPS NOW  LIMIT  CHANNELS  MAX  CAMPAIGN  QUEUED  NOTE
ALT        0.2      5         1   10         1       0  no PBX takes calls: they wait
MC         0.6     10         3    3         2       1  channels full, paced 1.5 s ahead

PBX      STATE    CPS NOW  RATE  MAX CPS  P90 MS  CALLS     MAX  CAMPAIGN  NOTE
default  unknown      0.4  1000     1000       -      2  10,000         2
east     down         0.4     4        8     900      2       5         1  listener lost its AMI connection; rate lowered: slow

OUTCOME         ATTEMPTS  SHARE
busy                   1  20.0%
human_no_press         1  20.0%
no_answer              1  20.0%
transferred            1  20.0%
voicemail_left         1  20.0%"""


def test_render_lays_out_every_number() -> None:
    assert watch.render(FRAME) == EXPECTED


def _pbx(**changes: Any) -> dict[str, Any]:
    return {**SPRING_PBXS[1], **changes}


def _trunk(**changes: Any) -> dict[str, Any]:
    return {**SPRING_TRUNKS[0], "slots_ahead_seconds": 0.0, **changes}


@pytest.mark.parametrize(
    ("changes", "expected_line"),
    [
        # An empty campaign: no progress, no rates, no outcomes.
        (
            {
                "contacts_total": 0,
                "contacts_done": 0,
                "contacts_remaining": 0,
                "progress": None,
                "contacts": {},
            },
            "progress  [------------------------------] -  0 of 0 contacts done, 0 remaining",
        ),
        ({"contacts": {}}, "contacts  pending 0  dialing 0  completed 0  exhausted 0  dnc 0"),
        (
            {"answer_rate": None, "human_rate": None, "press_rate": None, "transfer_rate": None},
            "rates     answer -  human -  press -  transfer -",
        ),
        ({"outcomes": {}, "attempts_finished": 0}, "outcomes  (none yet)"),
        ({"outcomes": {"busy": 3, "no_answer": 1}, "attempts_finished": 4}, "busy  3  75.0%"),
        ({"progress": 1.0}, "progress  [##############################] 100.0%"),
        ({"contacts_total": 1234567}, "4 of 1,234,567 contacts done"),
        ({"campaign_cps": 12.5, "window_seconds": 10.0}, "sending 12.5/s over 10 s"),
        ({"trunks": [_trunk(current_cps=5.4, waiting_for_pbx=False)]}, "ALT  5.4  5  1  10  1  0"),
        (
            {"pbxs": [_pbx(state="up", state_reason="listener connected", rate=8.0)]},
            "east  up  0.4  8  8  900  2  5  1",
        ),
        ({"pbxs": [_pbx(state="up", open_channels=5)]}, "rate lowered: slow; channels full"),
        ({"pbxs": [_pbx(latency_ms=None)]}, "east  down  0.4  4  8  -  2"),
        ({"trunks": [_trunk(current_cps=5.6)]}, "over cps limit"),
        ({"trunks": [_trunk(enabled=False)]}, "disabled"),
        ({"trunks": [_trunk(open_channels=10)]}, "10  10  1  0  channels full"),
        ({"trunks": []}, "TRUNK  CPS NOW  LIMIT  CHANNELS  MAX  CAMPAIGN  QUEUED  NOTE"),
        (
            {"complete": True, "status": "completed"},
            "campaign completed: this is the final snapshot",
        ),
        ({"status": "paused"}, "spring  paused  2026-03-02 10:00:05+00:00"),
    ],
)
def test_render_table(changes: dict[str, Any], expected_line: str) -> None:
    rendered = watch.render({**FRAME, **changes})
    squeezed = [" ".join(line.split()) for line in rendered.splitlines()]
    assert any(" ".join(expected_line.split()) in line for line in squeezed), rendered


def test_render_has_no_final_line_while_running() -> None:
    assert "final snapshot" not in watch.render(FRAME)


def test_redraw_overwrites_from_the_top_left() -> None:
    assert watch.redraw("a\nbc") == "\x1b[Ha\x1b[K\nbc\x1b[K\n\x1b[J"


def test_follow_refreshes_until_the_campaign_is_final() -> None:
    frames = iter([{"complete": False}, {"complete": False}, {"complete": True}])
    shown: list[dict[str, Any]] = []
    sleeps: list[float] = []
    last = watch.follow(lambda: next(frames), shown.append, interval=0.5, sleep=sleeps.append)
    assert last == {"complete": True} and len(shown) == 3 and sleeps == [0.5, 0.5]

    shown.clear()
    once = watch.follow(lambda: {"complete": False}, shown.append, interval=1, once=True)
    assert once == {"complete": False} and len(shown) == 1


# -- the command --------------------------------------------------------------------------------


def test_watch_once_prints_the_hand_counted_snapshot(cli_env: str) -> None:
    result = CliRunner().invoke(cli, ["campaign", "watch", "spring", "--once"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b[" not in out and out.count("spring  running") == 1
    assert "[#############-----------------] 44.4%  4 of 9 contacts done, 5 remaining" in out
    assert "pending 2  dialing 3  completed 2  exhausted 1  dnc 1  cancelled 0" in out
    assert "attempts  8 (3 open, 5 finished)   sending 0.4/s over 5 s" in out
    assert "answer 60.0%  human 40.0%  press 50.0%  transfer 50.0%" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line}
    assert rows["ALT"][:7] == ["ALT", "0.2", "5", "1", "10", "1", "0"]
    assert " ".join(rows["ALT"][7:]) == "no PBX takes calls: they wait"
    assert rows["east"][:10] == ["east", "down", "0.4", "4", "8", "900", "2", "5", "1", "listener"]
    assert rows["MC"][:7] == ["MC", "0.6", "10", "3", "3", "2", "1"]
    assert "channels full" in " ".join(rows["MC"][7:]) and "IDLE" not in rows
    assert rows["transferred"] == ["transferred", "1", "20.0%"]


def test_watch_json_prints_one_snapshot(cli_env: str) -> None:
    result = CliRunner().invoke(cli, ["campaign", "watch", "spring", "--json"])
    assert result.exit_code == 0, result.output
    frame = json.loads(result.output)
    assert _numbers(frame) == SPRING
    assert _trunks(frame) == SPRING_TRUNKS


def test_watch_stops_by_itself_with_a_final_snapshot(cli_env: str) -> None:
    result = CliRunner().invoke(cli, ["campaign", "watch", "done", "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("done  completed") == 1
    assert result.output.rstrip().endswith("campaign completed: this is the final snapshot")


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    """Ctrl-C while the frame after `frames` frames is being taken."""
    real = reports.watch_frame
    taken = 0

    def interrupted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal taken
        taken += 1
        if taken > frames:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reports, "watch_frame", interrupted)


def test_watch_repeats_plain_blocks_off_a_terminal_and_exits_on_ctrl_c(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_after(monkeypatch, 2)
    result = CliRunner().invoke(cli, ["campaign", "watch", "spring", "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    blocks = result.output.split("\n\nspring  running")
    assert len(blocks) == 2 and "\x1b[" not in result.output


def test_watch_redraws_in_place_on_a_terminal(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_after(monkeypatch, 2)
    monkeypatch.setattr(campaign_cli, "_stdout_is_terminal", lambda: True)
    # color: keep the control sequences click strips from output that is not a terminal.
    result = CliRunner().invoke(
        cli, ["campaign", "watch", "spring", "--interval", "0.2"], color=True
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(watch.HOME)
    assert result.output.count(watch.HOME) == 2 and result.output.count(watch.ERASE_BELOW) == 2
    assert "4 of 9 contacts done" in result.output


def test_watch_of_an_unknown_campaign_is_an_operator_error(cli_env: str) -> None:
    result = CliRunner().invoke(cli, ["campaign", "watch", "winter", "--once"])
    assert result.exit_code == 1
    assert "no campaign named 'winter'" in result.output
