"""Per-session event filters (the `Filter` action and manager.conf `eventfilter`).

Legacy filters are a regular expression searched in the whole event text, `!` in front making
it an exclude filter. Advanced filters (`MatchCriteria`) add action(include|exclude),
name(<Event>), header(<Header>) and method(regex|exact|starts_with|ends_with|contains|none).
With include filters only, an event must match one; with exclude filters only, it must match
none; with both, it must match an include and no exclude.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class FilterError(ValueError):
    """The filter cannot be used; the message is Asterisk's answer."""


FORMAT_ERROR = "Filter was formatted incorrectly.  Check the syntax of the filter given."
COMPILE_ERROR = "Filter did not compile.  Check the syntax of the filter given."

METHODS = {"regex", "exact", "starts_with", "ends_with", "contains", "none"}


@dataclass(frozen=True)
class EventFilter:
    exclude: bool
    method: str
    pattern: str
    event_name: str | None = None
    header: str | None = None
    regex: re.Pattern[str] | None = None

    def _match(self, data: str) -> bool:
        method = self.method
        if method == "regex":
            assert self.regex is not None
            return self.regex.search(data) is not None
        if method == "starts_with":
            return data.startswith(self.pattern)
        if method == "ends_with":
            return data.endswith(self.pattern)
        if method == "contains":
            return self.pattern in data
        if method == "exact":
            return data == self.pattern
        return True

    def matches(self, text: str) -> bool:
        if self.event_name is not None and event_name(text) != self.event_name:
            return False
        if self.header is None:
            return self._match(text)
        for line in text.split("\r\n"):
            if line.startswith(self.header):
                value = line[len(self.header) :].lstrip()
                if value and self._match(value):
                    return True
        return False


def event_name(text: str) -> str:
    if text.startswith("Event: "):
        return text[7 : text.find("\r\n")]
    return ""


def parse_filter(match_criteria: str, pattern: str) -> EventFilter:
    """Build a filter from the Filter action's MatchCriteria and Filter headers."""
    exclude = pattern.startswith("!")
    if exclude:
        pattern = pattern[1:]
    if not match_criteria:
        if not pattern:
            raise FilterError(FORMAT_ERROR)
        return EventFilter(exclude, "regex", pattern, regex=_compile(pattern))
    method = "none"
    name = header = None
    for option in re.split(r"[ ,]+", match_criteria.strip()):
        if not option:
            continue
        key, sep, rest = option.partition("(")
        value = rest.rstrip(")").strip()
        if not sep or not value:
            raise FilterError(FORMAT_ERROR)
        if key == "action":
            if value not in ("include", "exclude"):
                raise FilterError(FORMAT_ERROR)
            exclude = value == "exclude"
        elif key == "name":
            name = value
        elif key == "header":
            header = value if value.endswith(":") else value + ":"
        elif key == "method":
            if value not in METHODS:
                raise FilterError(FORMAT_ERROR)
            method = value
        else:
            raise FilterError(FORMAT_ERROR)
    regex = _compile(pattern) if method == "regex" else None
    return EventFilter(exclude, method, pattern, name, header, regex)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error:
        raise FilterError(COMPILE_ERROR) from None


@dataclass
class FilterSet:
    includes: list[EventFilter] = field(default_factory=list)
    excludes: list[EventFilter] = field(default_factory=list)

    def add(self, event_filter: EventFilter) -> None:
        (self.excludes if event_filter.exclude else self.includes).append(event_filter)

    def __bool__(self) -> bool:
        return bool(self.includes or self.excludes)

    def allows(self, text: str) -> bool:
        if self.includes and not any(f.matches(text) for f in self.includes):
            return False
        return not any(f.matches(text) for f in self.excludes)
