"""Phone normalisation for bulk imports: `dialer.phone.normalize` results, many times faster.

phonenumbers' full parse, validation and time-zone lookup costs ~75 us a number, too slow for
lists of millions. Two exact shortcuts, checked against `normalize` by the tests:

- Parsing. Input made only of digits and `+ ( ) - .` or spaces is split into country code and
  national number directly when none of phonenumbers' special cases can apply (international
  or national dialling prefixes, a leading zero, country code written without `+`). Anything
  else goes through `phonenumbers.parse`.
- Classification (possible, valid, time zones). phonenumbers decides it from the number's length,
  regular expressions over the national number, and a prefix table of time zones. Each pattern
  a country code can use is expanded once into paths of per-position digit sets. Walking a
  number's digits through those paths finds the depth k at which no path still depends on a
  later digit: from there on, every test phonenumbers makes has the same answer for every
  number of that length starting with those k digits. The answer is computed once with
  `dialer.phone.from_parsed` and cached on that prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants as sre_constants
from re import _parser as sre_parser

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS, PhoneMetadata, PhoneNumber
from phonenumbers import parse as phonenumbers_parse
from phonenumbers.phonenumberutil import (
    NumberParseException,
    national_significant_number,
    region_code_for_country_code,
)
from phonenumbers.tzdata import TIMEZONE_DATA

from dialer.phone import InvalidNumber, NormalizedNumber, _parse_reason, from_parsed

_ALL_DIGITS = "0123456789"
_DESC_FIELDS = (
    "general_desc",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
# Past this many expanded paths a pattern is not worth analysing; its numbers are not cached.
_MAX_PATHS = 50_000
# Bound on cached prefixes per normaliser, so memory stays flat whatever the input.
_MAX_NODES = 400_000
_PLAIN = re.compile(r"\+?[ (]*[0-9][0-9 ().\-]*", re.ASCII)

Path = tuple[str, ...]


class _Unsupported(Exception):
    """A pattern uses a construct the expansion does not model."""


def expand_pattern(pattern: str) -> list[Path]:
    """Every way `pattern` can match a digit string, as tuples of allowed digits per position.

    Only what phonenumbers' metadata uses is modelled (literals, classes, alternation, bounded
    repeats); anything else raises `_Unsupported`, and that country is then not cached.
    """
    paths = _expand(sre_parser.parse(pattern))
    return [p for p in paths if all(p)]


def _expand(sequence) -> list[Path]:
    out: list[Path] = [()]
    for op, arg in sequence:
        if op is sre_constants.LITERAL:
            char = chr(arg)
            alternatives: list[Path] = [(char if char in _ALL_DIGITS else "",)]
        elif op is sre_constants.IN:
            alternatives = [(_digit_class(arg),)]
        elif op is sre_constants.SUBPATTERN:
            alternatives = _expand(arg[-1])
        elif op is sre_constants.BRANCH:
            alternatives = [path for branch in arg[1] for path in _expand(branch)]
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, body = arg
            if high is sre_constants.MAXREPEAT:
                raise _Unsupported("unbounded repeat")
            body_paths = _expand(body)
            alternatives = []
            current: list[Path] = [()]
            for count in range(high + 1):
                if count >= low:
                    alternatives.extend(current)
                if count < high:
                    current = [a + b for a in current for b in body_paths]
                    _check_size(current)
        else:
            raise _Unsupported(str(op))
        out = [a + b for a in out for b in alternatives]
        _check_size(out)
    return out


def _check_size(paths: list[Path]) -> None:
    if len(paths) > _MAX_PATHS:
        raise _Unsupported("too many paths")


def _digit_class(items) -> str:
    allowed: set[str] = set()
    negate = False
    for op, arg in items:
        if op is sre_constants.LITERAL:
            allowed.add(chr(arg))
        elif op is sre_constants.RANGE:
            allowed.update(chr(c) for c in range(arg[0], arg[1] + 1))
        elif op is sre_constants.CATEGORY and arg is sre_constants.CATEGORY_DIGIT:
            allowed.update(_ALL_DIGITS)
        elif op is sre_constants.NEGATE:
            negate = True
        else:
            raise _Unsupported(str(op))
    digits = [d for d in _ALL_DIGITS if (d in allowed) != negate]
    return "".join(digits)


def _determining_part(path: Path) -> Path:
    """The path up to its last position that does not accept every digit."""
    end = len(path)
    while end and path[end - 1] == _ALL_DIGITS:
        end -= 1
    return path[:end]


class _CountryPatterns:
    """The paths of every pattern phonenumbers may test for one country code."""

    def __init__(self, country_code: int, zone_prefixes: list[str]) -> None:
        self.full: dict[int, set[Path]] = {}  # matched in full: keyed by path length
        self.prefix: list[Path] = []  # matched at the start (leading digits, zone table)
        for region in COUNTRY_CODE_TO_REGION_CODE[country_code]:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
            if metadata is None:
                continue
            for name in _DESC_FIELDS:
                desc = getattr(metadata, name)
                if desc is not None and desc.national_number_pattern:
                    for path in expand_pattern(desc.national_number_pattern):
                        self.full.setdefault(len(path), set()).add(_determining_part(path))
            if metadata.leading_digits:
                self.prefix.extend(expand_pattern(metadata.leading_digits))
        code = str(country_code)
        for key in zone_prefixes:
            self.prefix.append(tuple(key[len(code) :]))

    def root_paths(self, length: int) -> list[Path]:
        paths = set(self.full.get(length, ()))
        paths.update(_determining_part(p) for p in self.prefix if len(p) <= length)
        return [p for p in paths if p]


class _Node:
    """A number prefix; `pending` are the paths still depending on digits past it."""

    __slots__ = ("children", "pending", "result")

    def __init__(self, pending: list[Path]) -> None:
        self.pending = pending
        self.children: dict[str, _Node] = {}
        self.result: tuple[bool, tuple[str, ...] | str] | None = None


class BulkNormalizer:
    """`dialer.phone.normalize(raw, region, strict=True)`, with exact caches. One per process."""

    def __init__(self, region: str = "US") -> None:
        self.region = region
        self._roots: dict[tuple[int, int], _Node | None] = {}
        self._countries: dict[int, _CountryPatterns | None] = {}
        # Per country code: (its national-prefix pattern,) or None without metadata.
        self._parsing: dict[int, tuple[re.Pattern[str] | None] | None] = {}
        self._nodes = 0
        self._zone_prefixes: dict[int, list[str]] | None = None
        # phonenumbers reads national formats only for a region code it knows, spelt exactly.
        metadata = (
            PhoneMetadata.metadata_for_region(region, None) if region in SUPPORTED_REGIONS else None
        )
        self._national = _NationalRules.of(metadata) if metadata is not None else None

    def normalize(self, raw: str) -> NormalizedNumber:
        text = (raw or "").strip()
        split = self._split(text) if _PLAIN.fullmatch(text) else None
        if split is None:
            return self._slow(raw)
        country_code, national = split
        return self._classified(country_code, national, None)

    def _slow(self, raw: str) -> NormalizedNumber:
        text = (raw or "").strip()
        if not text or any(ch in text for ch in "\r\n\x00"):
            from dialer.phone import normalize

            return normalize(raw, self.region, strict=True)
        try:
            number = phonenumbers_parse(text, self.region)
        except NumberParseException as exc:
            raise InvalidNumber(f"not a phone number: {_parse_reason(exc)}") from None
        return self._classified(number.country_code, national_significant_number(number), number)

    def _split(self, text: str) -> tuple[int, str] | None:
        """(country code, national number) as phonenumbers would parse `text`, or None."""
        digits = (
            text.replace(" ", "")
            .replace("-", "")
            .replace(".", "")
            .replace("(", "")
            .replace(")", "")
        )
        if text[0] == "+":
            digits = digits[1:]
            if len(digits) < 4 or digits[0] == "0":
                return None
            for size in (1, 2, 3):
                code = int(digits[:size])
                if code in COUNTRY_CODE_TO_REGION_CODE:
                    break
            else:
                return None
            national = digits[size:]
            parsing = self._parsing_rules(code)
            if parsing is None:
                return None
            (national_prefix,) = parsing
        else:
            rules = self._national
            if rules is None or len(digits) < 4 or rules.idd.match(digits):
                return None
            if digits.startswith(rules.code_text):
                split = rules.strip_country_code(digits)
                if split is None:
                    return None
                code, national = split
            else:
                code, national = rules.code, digits
            national_prefix = rules.national_prefix
        if not 2 <= len(national) <= 17 or national[0] == "0":
            return None
        if national_prefix is not None and national_prefix.match(national):
            return None
        return code, national

    def _parsing_rules(self, code: int) -> tuple[re.Pattern[str] | None] | None:
        if code not in self._parsing:
            region = region_code_for_country_code(code)
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            self._parsing[code] = (
                None if metadata is None else (_compiled(metadata.national_prefix_for_parsing),)
            )
        return self._parsing[code]

    def _classified(
        self, country_code: int, national: str, number: PhoneNumber | None
    ) -> NormalizedNumber:
        node = self._node_for(country_code, national)
        result = node.result if node is not None else None
        if result is None:
            if number is None:
                number = PhoneNumber(country_code=country_code, national_number=int(national))
            try:
                zones = from_parsed(number, strict=True).timezones
                result = (True, zones)
            except InvalidNumber as exc:
                result = (False, str(exc))
            if node is not None:
                node.result = result
        ok, detail = result
        if not ok:
            raise InvalidNumber(detail)
        return NormalizedNumber(e164=f"+{country_code}{national}", timezones=detail)

    def _node_for(self, country_code: int, national: str) -> _Node | None:
        """The cache node that fixes this number's classification, or None (not cacheable)."""
        key = (country_code, len(national))
        if key not in self._roots:
            self._roots[key] = self._new_root(country_code, len(national))
        node = self._roots[key]
        depth = 0
        while node is not None and node.pending:
            digit = national[depth]
            child = node.children.get(digit)
            if child is None:
                if self._nodes >= _MAX_NODES:
                    return None
                pending = [p for p in node.pending if digit in p[depth]]
                child = _Node([p for p in pending if len(p) > depth + 1])
                node.children[digit] = child
                self._nodes += 1
            node = child
            depth += 1
        return node

    def _new_root(self, country_code: int, length: int) -> _Node | None:
        if country_code not in self._countries:
            try:
                patterns: _CountryPatterns | None = _CountryPatterns(
                    country_code, self._zones_by_code().get(country_code, [])
                )
            except _Unsupported:
                patterns = None
            self._countries[country_code] = patterns
        patterns = self._countries[country_code]
        return None if patterns is None else _Node(patterns.root_paths(length))

    def _zones_by_code(self) -> dict[int, list[str]]:
        """Time-zone table prefixes by the country code they start with."""
        if self._zone_prefixes is None:
            by_code: dict[int, list[str]] = {}
            # Country codes are a prefix code: a key starts with at most one of them. Keys
            # shorter than their country code match all its numbers and are left out.
            for key in TIMEZONE_DATA:
                for size in (1, 2, 3):
                    if size <= len(key) and int(key[:size]) in COUNTRY_CODE_TO_REGION_CODE:
                        by_code.setdefault(int(key[:size]), []).append(key)
            self._zone_prefixes = by_code
        return self._zone_prefixes


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


@dataclass(frozen=True)
class _NationalRules:
    """What phonenumbers checks to read a number written without `+` for one region."""

    code: int
    code_text: str
    idd: re.Pattern[str]
    national_prefix: re.Pattern[str] | None
    general: re.Pattern[str] | None
    max_length: int
    local_lengths: tuple[int, ...]

    @classmethod
    def of(cls, metadata: PhoneMetadata) -> _NationalRules | None:
        general = metadata.general_desc
        if not metadata.country_code or general is None or not general.possible_length:
            return None
        return cls(
            code=metadata.country_code,
            code_text=str(metadata.country_code),
            idd=re.compile(metadata.international_prefix or "NonMatch"),
            national_prefix=_compiled(metadata.national_prefix_for_parsing),
            general=_compiled(general.national_number_pattern),
            max_length=max(general.possible_length),
            local_lengths=tuple(general.possible_length_local_only or ()),
        )

    def strip_country_code(self, digits: str) -> tuple[int, str] | None:
        """`1 212 555 0123` in the US: phonenumbers drops the leading country code when the
        whole is not a valid national number but the rest is, or the whole is too long."""
        rest = digits[len(self.code_text) :]
        if self.national_prefix is not None and self.national_prefix.match(rest):
            return None
        matches_whole = self.general is not None and self.general.fullmatch(digits) is not None
        matches_rest = self.general is not None and self.general.fullmatch(rest) is not None
        too_long = len(digits) not in self.local_lengths and len(digits) > self.max_length
        if (not matches_whole and matches_rest) or too_long:
            return self.code, rest
        return None
