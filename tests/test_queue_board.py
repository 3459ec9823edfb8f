"""The listener's queue board (dialer.outcomes.queue_board): member state and agent time."""

from __future__ import annotations

import pytest

from dialer.outcomes.queue_board import QueueBoard

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def member_event(name: str, interface: str = "PJSIP/agent1", **fields: object) -> dict:
    event = {
        "Event": name,
        "Queue": "sales",
        "MemberName": "Agent 1",
        "Interface": interface,
        "Status": "1",
        "Paused": "0",
        "InCall": "0",
        "Wrapuptime": "5",
        "LastCall": "0",
    }
    event.update({k: str(v) for k, v in fields.items()})
    return event


def test_members_follow_their_events() -> None:
    board = QueueBoard("default")
    board.apply(member_event("QueueMemberAdded"), T0)
    board.apply(member_event("QueueMemberStatus", Status=6), T0 + 1)  # ringing
    board.apply({"Event": "AgentConnect", "Queue": "sales", "Interface": "PJSIP/agent1"}, T0 + 3)
    member = board.members[("sales", "PJSIP/agent1")]
    assert (member.status, member.in_call, member.call_started_at) == (6, True, T0 + 3)
    board.apply({"Event": "AgentComplete", "Queue": "sales", "Interface": "PJSIP/agent1"}, T0 + 63)
    board.apply(member_event("QueueMemberPause", Paused=1), T0 + 64)
    assert (member.in_call, member.last_call_at, member.paused) == (False, T0 + 63, True)
    changes = board.take_changes(T0 + 65)
    [row] = changes.upsert
    assert (row["member_name"], row["paused"], row["wrapup_s"]) == ("Agent 1", True, 5)
    board.apply(member_event("QueueMemberRemoved"), T0 + 70)
    changes = board.take_changes(T0 + 71)
    assert (changes.upsert, changes.removed) == ([], [("sales", "PJSIP/agent1")])


def test_agent_time_is_counted_per_minute() -> None:
    board = QueueBoard("default")
    board.apply(member_event("QueueMemberAdded", interface="a"), T0 + 30)
    board.apply(member_event("QueueMemberAdded", interface="b"), T0 + 30)
    board.apply({"Event": "AgentConnect", "Queue": "sales", "Interface": "a"}, T0 + 40)
    # b pauses at +50: not staffed from then on.
    board.apply(member_event("QueueMemberPause", interface="b", Paused=1), T0 + 50)
    board.apply({"Event": "AgentComplete", "Queue": "sales", "Interface": "a"}, T0 + 70)
    minutes = board.take_changes(T0 + 90).minutes
    first, second = minutes[("sales", T0)], minutes[("sales", T0 + 60)]
    # a: staffed 30..90, busy 40..75 (its call to +70, then 5 s of wrap-up, counted from the
    # +70 event to the end as wrap-up since it began inside it); b: staffed 30..50.
    assert first == pytest.approx([30 + 20, 20])
    assert second[0] == pytest.approx(30)
    assert 10 <= second[1] <= 30


def test_a_snapshot_replaces_the_membership_but_not_newer_events() -> None:
    board = QueueBoard("default")
    board.apply(member_event("QueueMemberAdded", interface="gone"), T0)
    board.apply(member_event("QueueMemberAdded", interface="kept"), T0)
    board.take_changes(T0)
    board.begin_snapshot()
    # An event after the request: newer than the reply about the same member.
    board.apply(member_event("QueueMemberPause", interface="kept", Paused=1), T0 + 1)
    board.apply_snapshot(
        [
            {"Event": "QueueParams", "Queue": "sales"},
            {
                "Event": "QueueMember",
                "Queue": "sales",
                "Location": "kept",
                "Name": "K",
                "Paused": "0",
                "Status": "1",
                "InCall": "0",
                "Wrapuptime": "0",
            },  # fmt: skip
            {
                "Event": "QueueMember",
                "Queue": "sales",
                "Location": "new",
                "Name": "N",
                "Paused": "0",
                "Status": "2",
                "InCall": "1",
                "Wrapuptime": "0",
            },  # fmt: skip
        ],
        T0 + 2,
    )
    assert set(board.members) == {("sales", "kept"), ("sales", "new")}
    assert board.members[("sales", "kept")].paused is True
    assert board.members[("sales", "new")].in_call is True
    changes = board.take_changes(T0 + 3)
    assert changes.snapshot_queues == ["sales"]
    assert {r["interface"] for r in changes.upsert} == {"kept", "new"}


def test_a_failed_write_is_given_back_whole() -> None:
    board = QueueBoard("default")
    board.apply(member_event("QueueMemberAdded"), T0)
    changes = board.take_changes(T0 + 10)
    board.give_back(changes)
    again = board.take_changes(T0 + 10)
    assert [r["interface"] for r in again.upsert] == ["PJSIP/agent1"]
    assert again.minutes[("sales", T0)] == pytest.approx([10.0, 0.0])


def test_agent_time_is_kept_until_it_is_taken() -> None:
    """The listener writes members every quarter second and agent time every few seconds: a
    take without minutes leaves them to the next, and an unchanged queue has nothing to write."""
    board = QueueBoard("default")
    board.apply(member_event("QueueMemberAdded"), T0)
    first = board.take_changes(T0 + 10, minutes=False)
    assert [r["interface"] for r in first.upsert] == ["PJSIP/agent1"]
    assert first.minutes == {}
    assert not board.take_changes(T0 + 20, minutes=False)
    board.give_back(board.take_changes(T0 + 25))  # a failed write gives its minutes back
    taken = board.take_changes(T0 + 30)
    assert taken.minutes == {("sales", T0): pytest.approx([30.0, 0.0])}
    assert board.take_changes(T0 + 30).minutes == {}


def test_odd_events_change_nothing() -> None:
    board = QueueBoard("default")
    board.apply({"Event": "QueueMemberStatus", "Queue": "", "Interface": "x"}, T0)
    board.apply({"Event": "AgentConnect", "Queue": "sales", "Interface": "unknown"}, T0)
    board.apply(member_event("QueueMemberAdded", Status="bad", Wrapuptime="-3"), T0)
    member = board.members[("sales", "PJSIP/agent1")]
    assert (len(board.members), member.status, member.wrapup_s) == (1, 1, 0)
