"""The AMI wire format as Asterisk's manager.c reads and writes it.

Reading: lines end with CRLF or a bare LF; a line that does not fit Asterisk's 1024-byte input
buffer is discarded and the action answered with `Failed to parse message: line too long`; an
empty line ends an action; more than 128 lines in one action is an error too.

Header values: the first header of a name wins, the name is matched without case, and blanks
before the value are skipped. `Variable:` values are split on commas with the dialplan's
argument rules (double quotes group, a backslash escapes the next character, parentheses and
brackets nest), so `a,b` sets `a` only, while `"a,b"` and `a\\,b` keep the comma.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# manager.c: `char inbuf[1025]`, one byte kept for the terminating NUL.
INPUT_BUFFER = 1024
# AST_MAX_MANHEADERS
MAX_HEADERS = 128
# AST_STANDARD_APP_ARGS(args, ...) with `AST_APP_ARG(vars)[64]`.
MAX_VARIABLES_PER_HEADER = 64

ENCODING = "utf-8"
ERRORS = "surrogateescape"  # bytes that are not UTF-8 survive a decode/encode round trip

LINE_TOO_LONG = "Failed to parse message: line too long"
TOO_MANY_LINES = "Too many lines in message or allocation failure"


@dataclass(slots=True)
class Message:
    """One action as received: its header lines, or the parse error Asterisk answers with."""

    lines: list[str] = field(default_factory=list)
    error: str | None = None
    _first: dict[str, str] | None = None

    def get(self, name: str) -> str:
        """The first header `name` (any case), blanks before the value skipped; '' if absent."""
        first = self._first
        if first is None:
            # Indexed once per action: names are what precedes a line's first colon.
            first = self._first = {}
            for line in self.lines:
                key, sep, value = line.partition(":")
                if sep:
                    key = key.lower()
                    if key not in first:
                        first[key] = skip_blanks(value)
        return first.get(name.lower(), "")

    def get_all(self, name: str) -> list[str]:
        prefix = name.lower()
        size = len(prefix)
        return [
            skip_blanks(line[size + 1 :])
            for line in self.lines
            if line[:size].lower() == prefix and line[size : size + 1] == ":"
        ]

    def pairs(self) -> list[tuple[str, str]]:
        """Every line as (name, value); a line without a colon has an empty value."""
        out = []
        for line in self.lines:
            name, sep, value = line.partition(":")
            out.append((name, skip_blanks(value) if sep else ""))
        return out


def skip_blanks(text: str) -> str:
    """ast_skip_blanks: drop leading spaces and control characters."""
    if not text or text[0] > " ":
        return text
    index = 0
    while index < len(text) and ord(text[index]) < 33:
        index += 1
    return text[index:] if index else text


class LineReader:
    """Turns received bytes into `Message`s exactly as manager.c's get_input/do_message do."""

    __slots__ = ("_buffer", "_lines", "_too_long", "_lost")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._too_long = False
        self._lost = False

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        buffer = self._buffer
        if not self._too_long:
            *complete, rest = buffer.split(b"\n")
            if len(rest) < INPUT_BUFFER and all(len(line) < INPUT_BUFFER for line in complete):
                # Every line fits the buffer: take them all at once.
                del buffer[: len(buffer) - len(rest)]
                for raw in complete:
                    self._line(raw, messages)
                return messages
        while True:
            end = buffer.find(b"\n", 0, INPUT_BUFFER)
            if end < 0:
                if len(buffer) >= INPUT_BUFFER:
                    # No terminator in a full buffer: discard it, keep the last byte in case
                    # it is the CR of a CRLF, and fail the action when it ends.
                    del buffer[: INPUT_BUFFER - 1]
                    self._too_long = True
                    continue
                break
            raw = bytes(buffer[:end])
            del buffer[: end + 1]
            self._line(raw, messages)
        return messages

    def _line(self, raw: bytes, messages: list[Message]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw:
            # A NUL ends the string in C: whatever follows it on the line is ignored.
            raw = raw.split(b"\0", 1)[0]
        if raw:
            if len(self._lines) < MAX_HEADERS:
                self._lines.append(raw.decode(ENCODING, ERRORS))
            else:
                self._lost = True
            return
        message = Message(self._lines)
        if self._lost:
            message.error = TOO_MANY_LINES
        elif self._too_long:
            message.error = LINE_TOO_LONG
            self._too_long = False
        messages.append(message)
        self._lines = []
        self._lost = False


_SPECIAL = frozenset('"\\()[]')


def separate_args(text: str, delim: str = ",", limit: int = MAX_VARIABLES_PER_HEADER) -> list[str]:
    """__ast_app_separate_args with remove_chars=1: the dialplan's argument splitting."""
    if not text:
        return []
    if _SPECIAL.isdisjoint(text):
        # Nothing quoted, escaped or nested: a plain split gives the same arguments.
        return text.split(delim, limit - 1)
    args: list[str] = []
    chars = list(text)
    pos = 0
    paren = bracket = 0
    quote = False
    ended_on_delim = False
    while pos < len(chars) and len(args) < limit - 1:
        current: list[str] = []
        ended_on_delim = False
        while pos < len(chars):
            char = chars[pos]
            if char == "(":
                paren += 1
            elif char == ")":
                paren = max(0, paren - 1)
            elif char == "[":
                bracket += 1
            elif char == "]":
                bracket = max(0, bracket - 1)
            elif char == '"' and delim != '"':
                quote = not quote
                pos += 1
                continue  # the quote itself is removed
            elif char == "\\":
                pos += 1  # the backslash is removed, the next character taken literally
                if pos < len(chars):
                    current.append(chars[pos])
                    pos += 1
                continue
            elif char == delim and not paren and not quote and not bracket:
                pos += 1
                ended_on_delim = True
                break
            current.append(char)
            pos += 1
        args.append("".join(current))
    if pos < len(chars):
        args.append("".join(chars[pos:]))
    elif ended_on_delim:
        args.append("")
    return args


def parse_variable_header(value: str) -> list[tuple[str, str]]:
    """The name=value pairs one `Variable:` header sets (pairs without '=' or name dropped)."""
    pairs = []
    for item in separate_args(skip_blanks(value)):
        name, sep, val = item.partition("=")
        if sep and name:
            pairs.append((name, val))
    return pairs


def originate_variables(message: Message) -> dict[str, str]:
    """The channel variables an Originate sets, as Asterisk ends up with them.

    Asterisk builds the list in reverse and applies it in that order, so when a name appears
    twice the first occurrence is applied last and wins.
    """
    ordered: list[tuple[str, str]] = []
    for header in message.get_all("Variable"):
        ordered.extend(parse_variable_header(header))
    result: dict[str, str] = {}
    for name, value in ordered:
        result.setdefault(name, value)
    return result


def frame(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A complete frame: `Name: value` lines and the blank line that ends it."""
    text = "".join(f"{name}: {value}\r\n" for name, value in pairs) + "\r\n"
    return text.encode(ENCODING, ERRORS)


def response(
    message: Message,
    status: str,
    text: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """astman_send_response_full: Response, ActionID (if the action had one), Message."""
    pairs = [("Response", status)]
    action_id = message.get("ActionID")
    if action_id:
        pairs.append(("ActionID", action_id))
    if text is not None:
        pairs.append(("Message", text))
    pairs.extend(extra)
    return frame(pairs)


def error(message: Message, text: str) -> bytes:
    return response(message, "Error", text)


def ack(message: Message, text: str | None = None) -> bytes:
    return response(message, "Success", text)


def list_ack(message: Message, text: str) -> bytes:
    """astman_send_listack: the start of an event list."""
    pairs = [("Response", "Success")]
    action_id = message.get("ActionID")
    if action_id:
        pairs.append(("ActionID", action_id))
    pairs += [("EventList", "start"), ("Message", text)]
    return frame(pairs)


def list_complete(
    message: Message, event: str, count: int, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    """astman_send_list_complete: the event closing an event list."""
    pairs = [("Event", event)]
    action_id = message.get("ActionID")
    if action_id:
        pairs.append(("ActionID", action_id))
    pairs += [("EventList", "Complete"), ("ListItems", str(count)), *extra]
    return frame(pairs)


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def int_prefix(text: str) -> int | None:
    """sscanf("%30d"): the integer a value starts with, None if it starts with none."""
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else None


def action_id_line(message: Message) -> str:
    """`ActionID: ...` plus CRLF for frames built by hand, '' without an ActionID."""
    action_id = message.get("ActionID")
    return f"ActionID: {action_id}\r\n" if action_id else ""
