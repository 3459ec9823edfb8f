"""`dialer campaign watch`: a campaign's live view as text, and the refresh loop (no I/O here).

The numbers come from `dialer.reports.queries.watch_frame`; this module only lays them out, so the
layout is tested on plain dicts and the command stays a thin loop around the two.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from dialer.models import CONTACT_STATUSES

Frame = dict[str, Any]

BAR_WIDTH = 30
# Pacing pads each interval (dialer.dialing.pacing.PAD); a rate this far over the limit is an overrun.
OVER_LIMIT = 1.10
# VT100: cursor home, erase to end of line, erase below. Redrawing over the old frame instead
# of clearing the screen first does not flicker.
HOME, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def render(frame: Frame) -> str:
    """The frame as the lines a terminal shows (no trailing newline)."""
    progress = frame["progress"]
    filled = round((progress or 0) * BAR_WIDTH)
    contacts = frame["contacts"]
    lines = [
        f"{frame['campaign']}  {frame['status']}  {_time(frame['at'])}",
        f"progress  [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {_pct(progress)}  "
        f"{_n(frame['contacts_done'])} of {_n(frame['contacts_total'])} contacts done, "
        f"{_n(frame['contacts_remaining'])} remaining",
        "contacts  " + "  ".join(f"{s} {_n(contacts.get(s, 0))}" for s in CONTACT_STATUSES),
        f"attempts  {_n(frame['attempts'])} ({_n(frame['attempts_open'])} open, "
        f"{_n(frame['attempts_finished'])} finished)   "
        f"sending {frame['campaign_cps']:g}/s over {frame['window_seconds']:g} s",
        f"rates     answer {_pct(frame['answer_rate'])}  human {_pct(frame['human_rate'])}  "
        f"press {_pct(frame['press_rate'])}  transfer {_pct(frame['transfer_rate'])}",
        "",
        *_table(
            ("trunk", "cps now", "limit", "channels", "max", "campaign", "queued", "note"),
            [_trunk_row(t) for t in frame["trunks"]],
        ),
        "",
    ]
    if frame.get("pbxs"):
        lines += [
            *_table(
                (
                    "pbx",
                    "state",
                    "cps now",
                    "rate",
                    "max cps",
                    "p90 ms",
                    "calls",
                    "max",
                    "campaign",
                    "note",
                ),
                [_pbx_row(p) for p in frame["pbxs"]],
            ),  # fmt: skip
            "",
        ]
    finished = frame["attempts_finished"]
    outcomes = sorted(frame["outcomes"].items(), key=lambda item: (-item[1], item[0]))
    if outcomes:
        rows = [
            (name, _n(count), _pct(count / finished if finished else None))
            for name, count in outcomes
        ]
        lines += _table(("outcome", "attempts", "share"), rows)
    else:
        lines.append("outcomes  (none yet)")
    if frame["complete"]:
        lines += ["", f"campaign {frame['status']}: this is the final snapshot"]
    return "\n".join(lines)


def redraw(text: str) -> str:
    """`text` drawn over the previous frame from the top-left corner of the terminal."""
    return HOME + "".join(f"{line}{ERASE_LINE}\n" for line in text.split("\n")) + ERASE_BELOW


def follow(
    take: Callable[[], Frame],
    show: Callable[[Frame], None],
    *,
    interval: float,
    once: bool = False,
    sleep: Callable[[float], None] | None = None,
) -> Frame:
    """Take and show a frame every `interval` seconds until the campaign is completed or
    cancelled (or after one frame with `once`); returns the last frame."""
    while True:
        frame = take()
        show(frame)
        if once or frame["complete"]:
            return frame
        (sleep or time.sleep)(interval)


def _trunk_row(trunk: Frame) -> tuple[str, ...]:
    notes = []
    if not trunk.get("enabled", True):
        notes.append("disabled")
    if trunk["open_channels"] >= trunk["max_channels"]:
        notes.append("channels full")
    if trunk["current_cps"] > trunk["cps_limit"] * OVER_LIMIT:
        notes.append("over cps limit")
    if trunk.get("slots_ahead_seconds"):
        notes.append(f"paced {trunk['slots_ahead_seconds']:g} s ahead")
    if trunk.get("waiting_for_pbx"):
        notes.append("no PBX takes calls: they wait")
    return (
        trunk["trunk"],
        f"{trunk['current_cps']:.1f}",
        f"{trunk['cps_limit']:g}",
        _n(trunk["open_channels"]),
        _n(trunk["max_channels"]),
        _n(trunk["campaign_open_channels"]),
        _n(trunk.get("queued", 0)),
        ", ".join(notes),
    )


def _pbx_row(pbx: Frame) -> tuple[str, ...]:
    notes = []
    if pbx["state"] not in ("up", "disabled") and pbx.get("state_reason"):
        notes.append(pbx["state_reason"])
    if pbx["rate"] < pbx["max_cps"]:
        notes.append(f"rate lowered: {pbx.get('rate_reason') or 'back-pressure'}")
    if pbx["open_channels"] >= pbx["max_channels"]:
        notes.append("channels full")
    latency = pbx.get("latency_ms")
    return (
        pbx["pbx"],
        pbx["state"],
        f"{pbx['current_cps']:.1f}",
        f"{pbx['rate']:g}",
        f"{pbx['max_cps']:g}",
        "-" if latency is None else f"{latency:.0f}",
        _n(pbx["open_channels"]),
        _n(pbx["max_channels"]),
        _n(pbx["campaign_open_channels"]),
        "; ".join(notes),
    )


def _table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns under upper-case titles: the first left-aligned, numbers right-aligned, the
    last (free text) left-aligned when it is `note`."""
    widths = [max([len(t), *(len(r[i]) for r in rows)]) for i, t in enumerate(titles)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            left = i == 0 or titles[i] in ("note", "state")
            out.append(cell.ljust(width) if left else cell.rjust(width))
        return "  ".join(out).rstrip()

    return [line([t.upper() for t in titles]), *(line(r) for r in rows)]


def _time(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _n(value: int) -> str:
    return f"{value:,}"
