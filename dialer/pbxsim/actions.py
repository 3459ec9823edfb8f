"""Action dispatch (manager.c process_message) and the session actions: Login, Logoff, Ping,
Events, Filter, Challenge, ListCommands."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dialer.pbxsim import call_actions, channel_actions, codes, dialplan_actions, queue_actions
from dialer.pbxsim.filters import FilterError, parse_filter
from dialer.pbxsim.wire import Message, ack, error, frame, response

if TYPE_CHECKING:
    from dialer.pbxsim.session import AmiSession

Handler = Callable[["AmiSession", Message], "asyncio.Future[None] | None"]

# What CoreSettings reports: the Asterisk the simulator models (DESIGN.md: Asterisk 22).
ASTERISK_VERSION = "22.0.0-sim"
AMI_VERSION = "10.0.0"
# Actions a session may send before logging in.
PRE_LOGIN = {"login", "logoff", "challenge"}


def dispatch(session: AmiSession, message: Message) -> asyncio.Future[None] | None:
    if message.error is not None:
        session.send(error(message, message.error))
        return None
    action = next((v for v in message.get_all("Action") if v), "")
    if not action:
        _security_event(session, "RequestBadFormat", [("RequestType", "NONE")])
        session.send(error(message, "Missing action in request"))
        return None
    name = action.lower()
    if not session.authenticated and name not in PRE_LOGIN:
        session.send(error(message, "Permission denied"))
        return None
    handler = _HANDLERS.get(name)
    if handler is None:
        _security_event(session, "RequestBadFormat", [("RequestType", f"Action: {action}")])
        session.send(
            error(
                message,
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands.",
            )
        )
        return None
    if not _permitted(session, name):
        # report_req_not_allowed, then the bare answer: nothing says which privilege is missing.
        _security_event(
            session,
            "RequestNotAllowed",
            [("AccountID", session.username), ("RequestType", f"Action: {action}")],
            account_first=True,
        )
        session.send(error(message, "Permission denied"))
        return None
    return handler(session, message)


def _permitted(session: AmiSession, name: str) -> bool:
    """manager.c: `(writeperm & authority) || authority == 0`: any one privilege will do."""
    write = session.sim.config.write
    if write is None or "all" in write:
        return True
    needed = _PRIVILEGES.get(name, frozenset())
    return not needed or bool(needed & write)


def command_list() -> list[tuple[str, str, str]]:
    """(action, synopsis, privilege) of every action the simulator answers."""
    rows = []
    for table in _tables():
        rows.extend((name, synopsis, priv) for name, (_, synopsis, priv) in table.items())
    return sorted(rows)


def _tables() -> tuple[dict[str, tuple[Handler, str, str]], ...]:
    return (
        SESSION_ACTIONS,
        call_actions.ACTIONS,
        channel_actions.ACTIONS,
        queue_actions.ACTIONS,
        dialplan_actions.ACTIONS,
    )


# -- login ----------------------------------------------------------------------------------------


def _login(session: AmiSession, message: Message) -> asyncio.Future[None] | None:
    if session.authenticated:
        session.send(ack(message, "Already authenticated"))
        return None
    config = session.sim.config
    username = message.get("Username")
    accepted = bool(username) and username == config.username
    if accepted and message.get("AuthType").lower() == "md5":
        expected = hashlib.md5((session.challenge + config.secret).encode()).hexdigest()
        accepted = bool(session.challenge) and message.get("Key") == expected
    elif accepted:
        accepted = message.get("Secret") == config.secret
    if not accepted:
        # manager.c sleeps a second before answering, then drops the connection.
        done: asyncio.Future[None] = session.sim.loop.create_future()

        def refuse() -> None:
            session.send(error(message, "Authentication failed"))
            session.close_after_output()
            if not done.done():
                done.set_result(None)

        session.sim.loop.call_later(session.sim.engine.timings.auth_failure, refuse)
        return done
    session.authenticated = True
    session.username = username
    mask = codes.event_mask(message.get("Events"))
    session.set_event_mask(codes.ALL_CATEGORIES if mask is None else mask)
    session.send(ack(message, "Authentication accepted"))
    if session.send_events & codes.SYSTEM:
        uptime = int(time.time() - session.sim.started_at)
        session.send(
            frame(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", str(uptime)),
                    ("LastReload", str(uptime)),
                    ("Status", "Fully Booted"),
                ]
            )
        )
    _security_event(
        session,
        "SuccessfulAuth",
        [("AccountID", username), ("UsingPassword", "0")],
        severity="Informational",
        account_first=True,
    )
    return None


def _security_event(
    session: AmiSession,
    event: str,
    fields: list[tuple[str, str]],
    *,
    severity: str = "Error",
    account_first: bool = False,
) -> None:
    sim = session.sim
    if not sim.bus.mask & codes.SECURITY:
        return
    now = _event_tv(time.time())
    kind = session.transport_name
    local = f"IPV4/{kind}/{session.local[0]}/{session.local[1]}"
    remote = f"IPV4/{kind}/{session.remote[0]}/{session.remote[1]}"
    head = [
        ("EventTV", now),
        ("Severity", severity),
        ("Service", "AMI"),
        ("EventVersion", "1"),
    ]
    if account_first:
        body = [
            *head,
            fields[0],
            ("SessionID", f"0x{id(session):x}"),
            ("LocalAddress", local),
            ("RemoteAddress", remote),
            *fields[1:],
            ("SessionTV", _event_tv(session.started)),
        ]
    else:
        body = [
            *head,
            ("SessionID", f"0x{id(session):x}"),
            ("LocalAddress", local),
            ("RemoteAddress", remote),
            *fields,
            ("SessionTV", _event_tv(session.started)),
        ]
        if session.username:
            body.append(("AccountID", session.username))
    text = "".join(f"{k}: {v}\r\n" for k, v in body)
    sim.bus.publish(codes.SECURITY, f"Event: {event}\r\nPrivilege: security,all\r\n{text}\r\n")


def _event_tv(when: float) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _logoff(session: AmiSession, message: Message) -> None:
    session.send(response(message, "Goodbye", "Thanks for all the fish."))
    session.close_after_output()


def _challenge(session: AmiSession, message: Message) -> None:
    if message.get("AuthType").lower() != "md5":
        session.send(error(message, "Must specify AuthType"))
        return
    if not session.challenge:
        session.challenge = str(random.randint(0, 2**31 - 1))
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    pairs.append(("Challenge", session.challenge))
    session.send(frame(pairs))


# -- session --------------------------------------------------------------------------------------


def _ping(session: AmiSession, message: Message) -> None:
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    now = time.time()
    pairs += [("Ping", "Pong"), ("Timestamp", f"{int(now)}.{int(now % 1 * 1e6):06d}")]
    session.send(frame(pairs))


def _core_settings(session: AmiSession, message: Message) -> None:
    """manager.c action_coresettings, with the simulator's version."""
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    pairs += [
        ("AMIversion", AMI_VERSION),
        ("AsteriskVersion", ASTERISK_VERSION),
        ("SystemName", ""),
        ("CoreMaxCalls", "0"),
        ("CoreMaxLoadAvg", "0.000000"),
        ("CoreRunUser", ""),
        ("CoreRunGroup", ""),
        ("CoreMaxFilehandles", "0"),
        ("CoreRealTimeEnabled", "No"),
        ("CoreCDRenabled", "Yes"),
        ("CoreHTTPenabled", "No"),
        ("SoundsSearchCustomDir", "No"),
    ]
    session.send(frame(pairs))


def _events(session: AmiSession, message: Message) -> None:
    mask = codes.event_mask(message.get("EventMask"))
    if mask is None:
        session.send(error(message, "Invalid event mask"))
        return
    session.set_event_mask(mask & codes.ALL_CATEGORIES)
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    pairs.append(("Events", "On" if mask else "Off"))
    session.send(frame(pairs))


def _filter(session: AmiSession, message: Message) -> None:
    if message.get("Operation").lower() != "add":
        session.send(error(message, "Unknown operation"))
        return
    try:
        event_filter = parse_filter(message.get("MatchCriteria"), message.get("Filter"))
    except FilterError as exc:
        session.send(error(message, str(exc)))
        return
    session.filters.add(event_filter)
    session.send(ack(message, "Success"))


def _list_commands(session: AmiSession, message: Message) -> None:
    pairs = [("Response", "Success")]
    if message.get("ActionID"):
        pairs.append(("ActionID", message.get("ActionID")))
    pairs += [(name, f"{synopsis}  (Priv: {priv})") for name, synopsis, priv in command_list()]
    session.send(frame(pairs))


# name -> (handler, synopsis, privilege), as ListCommands shows them
SESSION_ACTIONS: dict[str, tuple[Handler, str, str]] = {
    "Login": (_login, "Login Manager.", "<none>"),
    "Logoff": (_logoff, "Logoff Manager.", "<none>"),
    "Challenge": (_challenge, "Generate Challenge for MD5 Auth.", "<none>"),
    "Ping": (_ping, "Keepalive command.", "<none>"),
    "CoreSettings": (
        _core_settings,
        "Show PBX core settings (version etc).",
        "system,reporting,all",
    ),
    "Events": (_events, "Control Event Flow.", "<none>"),
    "Filter": (_filter, "Dynamically add filters for the current manager session.", "system,all"),
    "ListCommands": (_list_commands, "List available manager commands.", "<none>"),
}

_HANDLERS: dict[str, Handler] = {
    name.lower(): entry[0] for table in _tables() for name, entry in table.items()
}
# Action (lower case) -> the write privileges that allow it (empty: no privilege needed).
_PRIVILEGES: dict[str, frozenset[str]] = {
    name.lower(): frozenset(p for p in entry[2].split(",") if p not in ("all", "<none>"))
    for table in _tables()
    for name, entry in table.items()
}
