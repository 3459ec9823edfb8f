"""AMI frames on the wire: header encoding and the checks that keep Asterisk safe (pure).

Measured on Asterisk 22.10 (transcript variable_comma_crlf):
- a CR or LF inside a value starts a new header, and CR LF CR LF starts a whole new action;
- Asterisk's input buffer holds 1024 bytes: a longer line is answered "line too long";
- a `Variable:` header value is split on commas (and understands quotes, brackets, parentheses
  and backslash escapes) before `name=value` pairs are formed, so `a,b` arrives as `a`.

Every frame the dialer sends is built here, and nothing is returned unless every line is safe:
a refused value raises `UnsafeHeaderValue` and no byte of the frame exists to be sent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

# The spec's variable order: lowercase names, then the uppercase copies the dialplan may use.
LOWERCASE_VARIABLES = (
    "to",
    "from",
    "transfer_number",
    "ivr_file",
    "ivr_vm_file",
    "wait_strategy",
    "press_key",
    "amd_enabled",
    "transfer_prefix",
    "custom_call_id",
    "trunk",
)
UPPERCASE_VARIABLES = (
    ("TRANSFER_NUMBER", "transfer_number"),
    ("FROM_NUMBER", "from"),
    ("TO_NUMBER", "to"),
    ("TRUNK", "trunk"),
    ("IVR_FILE", "ivr_file"),
    ("IVR_VM_FILE", "ivr_vm_file"),
    ("PRESS_KEY", "press_key"),
    ("AMD_ENABLED", "amd_enabled"),
)
VARIABLE_ORDER = LOWERCASE_VARIABLES + tuple(upper for upper, _ in UPPERCASE_VARIABLES)
# Sent after the spec's variables, and only when the trunk's template needs them.
TRANSFER_DIAL_VARIABLES = ("transfer_dial", "TRANSFER_DIAL")
EOL = "\r\n"
# Asterisk reads a line into a 1024-byte buffer; the line and its CR LF must both fit.
MAX_LINE_BYTES = 1024

_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\r\n\x00]")
# Characters Asterisk's argument splitter interprets inside a Variable value; each is sent
# with a backslash so the value arrives unchanged.
_VARIABLE_SPECIAL = re.compile(r'([\\,"()\[\]])')
_SECRET_HEADERS = frozenset({"secret", "key"})
# The payload's own variables in the order they are sent, whatever order jsonb gave them back.
_WIRE_ORDER = VARIABLE_ORDER + TRANSFER_DIAL_VARIABLES

HeaderValue = str | int | bool | list[str] | tuple[str, ...]
Headers = Mapping[str, HeaderValue] | Iterable[tuple[str, str]]


class UnsafeHeaderValue(ValueError):
    """A header name or value would corrupt the AMI stream; nothing was sent."""


def escape_variable_value(value: str) -> str:
    """The value as a `Variable: name=value` header needs it to arrive whole."""
    return _VARIABLE_SPECIAL.sub(r"\\\1", value)


def unescape_variable_value(text: str) -> str:
    """Inverse of `escape_variable_value` (what Asterisk does to an escaped value)."""
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            out.append(next(chars, ""))
        elif ch != '"':
            out.append(ch)
    return "".join(out)


def header_lines(headers: Headers) -> list[tuple[str, str]]:
    """Headers as ordered (name, value) pairs: lists repeat the header, bools are true/false."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines: list[tuple[str, str]] = []
    for name, value in items:
        if isinstance(value, (list, tuple)):
            lines.extend((name, _scalar(name, v)) for v in value)
        else:
            lines.append((name, _scalar(name, value)))
    return lines


def encode_action(headers: Headers) -> bytes:
    """The complete frame (ending with the blank line) for an action, or `UnsafeHeaderValue`."""
    lines = header_lines(headers)
    if not any(name.lower() == "action" for name, _ in lines):
        raise UnsafeHeaderValue("an AMI frame needs an Action header")
    encoded = [_encode_line(name, value) for name, value in lines]
    encoded.append(EOL.encode())
    return b"".join(encoded)


# Most lines of a campaign's Originates are the same from call to call (an Originate is
# encoded and checked a few times on its way out); refusals raise, so they are never cached.
@functools.lru_cache(maxsize=4096)
def _encode_line(name: str, value: str) -> bytes:
    if not _HEADER_NAME.match(name):
        raise UnsafeHeaderValue(f"header name {name!r} is not a plain token")
    if _CONTROL.search(value):
        raise UnsafeHeaderValue(f"{name}: value contains CR, LF or NUL; refused")
    line = f"{name}: {value}{EOL}".encode()
    if len(line) > MAX_LINE_BYTES:
        raise UnsafeHeaderValue(
            f"{name}: line is {len(line)} bytes, over Asterisk's {MAX_LINE_BYTES}-byte limit"
        )
    return line


def originate_headers(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """AMI headers for a payload built by `dialer.dialing.payload`, in a fixed order.

    Variables go out one header each, the spec's variables first in the spec's order (the stored
    payload may come back from jsonb with its keys reordered), then `transfer_dial` and
    `TRANSFER_DIAL` when present, then any others. The call's id is sent as `ChannelId` (and
    `<id>-2` as `OtherChannelId` for the second half of a Local channel) so Asterisk uses it as
    Uniqueid and every leg's Linkedid.
    """
    missing = [
        k for k in ("actionid", "channel", "context", "exten", "priority") if k not in payload
    ]
    if missing:
        raise ValueError(f"Originate payload lacks {', '.join(missing)}")
    if str(payload.get("action", "Originate")).lower() != "originate":
        raise ValueError(f"not an Originate payload: action {payload.get('action')!r}")
    if payload.get("async", True) not in (True, "true"):
        # A synchronous Originate blocks until the callee answers; the dialer never waits so.
        raise ValueError("Originate payload must be async")
    call_id = str(payload["actionid"])
    variables: Mapping[str, Any] = payload.get("variable") or {}
    if variables.get("custom_call_id", call_id) != call_id:
        raise ValueError("payload actionid and custom_call_id differ")

    headers: list[tuple[str, str]] = [
        ("Action", "Originate"),
        ("ActionID", call_id),
        ("Channel", _scalar("Channel", payload["channel"])),
        ("Context", _scalar("Context", payload["context"])),
        ("Exten", _scalar("Exten", payload["exten"])),
        ("Priority", _scalar("Priority", payload["priority"])),
    ]
    if payload.get("callerid"):
        headers.append(("CallerID", _scalar("CallerID", payload["callerid"])))
    if payload.get("timeout") is not None:
        headers.append(("Timeout", _scalar("Timeout", payload["timeout"])))
    headers.append(("Async", "true"))
    ordered = [n for n in _WIRE_ORDER if n in variables]
    ordered += [n for n in variables if n not in _WIRE_ORDER]
    for name in ordered:
        headers.append(("Variable", _variable(name, variables[name])))
    headers.append(("ChannelId", call_id))
    if is_local_channel(str(payload["channel"])):
        headers.append(("OtherChannelId", f"{call_id}-2"))
    return headers


def originate_frame(payload: Mapping[str, Any]) -> bytes:
    """The bytes that would be written for this payload (validated; see `encode_action`)."""
    return encode_action(originate_headers(payload))


def describe(headers: Headers) -> str:
    """One log-safe line for an action: secrets replaced by ***."""
    return ", ".join(
        f"{name}={'***' if name.lower() in _SECRET_HEADERS else value}"
        for name, value in header_lines(headers)
    )


def _variable(name: str, value: Any) -> str:
    if isinstance(value, (str, int)):  # hashable, and bool is an int
        return _scalar_variable(name, value)
    return _checked_variable(name, value)


# typed: True and 1 are equal keys otherwise, and are sent as "true" and "1".
@functools.lru_cache(maxsize=4096, typed=True)
def _scalar_variable(name: str, value: str | int) -> str:
    return _checked_variable(name, value)


def _checked_variable(name: str, value: Any) -> str:
    if not _VARIABLE_NAME.match(str(name)):
        raise UnsafeHeaderValue(f"variable name {name!r} is not a plain identifier")
    text = _scalar(f"Variable {name}", value)
    if _CONTROL.search(text):
        raise UnsafeHeaderValue(f"variable {name}: value contains CR, LF or NUL; refused")
    return f"{name}={escape_variable_value(text)}"


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise UnsafeHeaderValue(f"{name}: value of type {type(value).__name__} cannot be a header")


def is_local_channel(channel: str) -> bool:
    """Local channels have two halves; each needs its own caller-chosen id."""
    return channel.lower().startswith("local/")
