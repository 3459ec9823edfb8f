"""The Originate payload, key for key as the specification shows it (pure, no I/O).

The payload is the dialer's record of what it asked Asterisk to do: it is stored on the call
attempt and translated to an AMI frame by `dialer.ami.wire`. Its shape is fixed by the spec:
top-level keys in this order, every channel variable in lowercase and again in uppercase, numbers
in E.164, `actionid` equal to `custom_call_id`, `priority`/`timeout` as integers, `async` true.

One addition to the spec's variables: `transfer_dial`/`TRANSFER_DIAL`, the full dial string of
the IVR's transfer through the trunk's channel template. The reference dialplan would otherwise
build `PJSIP/<prefix><number>@<trunk name>`, an endpoint that does not exist when the template
names another one (`PJSIP/{number}@carrier-east`) or another technology (`Local/...`). It is
sent only when it differs from that default, so the spec's payloads stay as they are.

A second, `transfer_queue`/`TRANSFER_QUEUE`: the Asterisk queue a key press transfers into
(the reference dialplan's `Queue(${TRANSFER_QUEUE})`), sent only by campaigns that have one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from dialer.ami.wire import UPPERCASE_VARIABLES
from dialer.phone import is_e164, to_e164

DEFAULT_CHANNEL_TEMPLATE = "PJSIP/{number}@{trunk}"
DEFAULT_TRUNK = "MC"

PAYLOAD_KEYS = (
    "action",
    "actionid",
    "channel",
    "context",
    "exten",
    "priority",
    "callerid",
    "timeout",
    "async",
    "variable",
)

_CALL_ID = re.compile(r"^[0-9]+_[0-9]+$")
_DTMF_KEY = re.compile(r"^[0-9*#]$")
# Characters that would end or corrupt the `"name" <number>` caller ID Asterisk parses.
_CALLER_NAME_FORBIDDEN = set('"<>\\')
# Dial() and UserEvent() split their arguments on commas; CR, LF and NUL would break the header.
_DIAL_STRING_FORBIDDEN = set(",\r\n\x00")


class PayloadError(ValueError):
    """A payload input is unusable; the message names the field."""


@dataclass(frozen=True, slots=True)
class CallSettings:
    """The campaign-level choices that shape every Originate (defaults are the spec's)."""

    context: str = "DynamicIVR"
    exten: str = "s"
    priority: int = 1
    timeout_ms: int = 30000
    ivr_file: str = ""
    ivr_vm_file: str = ""
    transfer_number: str = ""
    transfer_prefix: str = ""
    press_key: str = "1"
    wait_strategy: str = "random"
    amd_enabled: bool = True
    caller_id_name: str | None = None
    region: str = "US"
    transfer_queue: str = ""

    @classmethod
    def from_campaign(cls, campaign: _CampaignLike) -> CallSettings:
        """The settings of a `dialer.models.Campaign` (or anything with the same attributes)."""
        return cls(
            context=campaign.context,
            exten=campaign.exten,
            priority=campaign.priority,
            timeout_ms=campaign.originate_timeout_ms,
            ivr_file=campaign.ivr_file,
            ivr_vm_file=campaign.ivr_vm_file,
            transfer_number=campaign.transfer_number,
            transfer_prefix=campaign.transfer_prefix,
            press_key=campaign.press_key,
            wait_strategy=campaign.wait_strategy,
            amd_enabled=campaign.amd_enabled,
            caller_id_name=campaign.caller_id_name,
            region=campaign.region,
            transfer_queue=campaign.transfer_queue,
        )


@dataclass(frozen=True, slots=True)
class TrunkRoute:
    """Where the call leaves: the trunk's name and its Asterisk dial-string template."""

    name: str = DEFAULT_TRUNK
    channel_template: str = DEFAULT_CHANNEL_TEMPLATE

    def channel_for(self, number: str) -> str:
        """The dial string for `number`; only `{number}` and `{trunk}` are substituted."""
        if "{number}" not in self.channel_template:
            raise PayloadError(
                f"channel template {self.channel_template!r} has no {{number}} placeholder"
            )
        return self.channel_template.replace("{number}", number).replace("{trunk}", self.name)

    def transfer_dial(self, dialled: str) -> str:
        """The dial string of a transfer to `dialled` (prefix included) through this trunk, or
        '' when it is what the reference dialplan builds without it (`PJSIP/<dialled>@<name>`)."""
        channel = self.channel_for(dialled)
        return "" if channel == f"PJSIP/{dialled}@{self.name}" else channel


class _CampaignLike(Protocol):
    context: str
    exten: str
    priority: int
    originate_timeout_ms: int
    ivr_file: str
    ivr_vm_file: str
    transfer_number: str
    transfer_prefix: str
    press_key: str
    wait_strategy: str
    amd_enabled: bool
    caller_id_name: str | None
    region: str
    transfer_queue: str


def custom_call_id(epoch_ms: int, attempt_id: int) -> str:
    """`<epoch_ms>_<attempt id>`: the spec's shape, unique because the attempt id is a key."""
    if epoch_ms < 0 or attempt_id < 0:
        raise PayloadError("custom_call_id parts must be non-negative integers")
    return f"{int(epoch_ms)}_{int(attempt_id)}"


def build_originate_payload(
    *,
    call_id: str,
    to_number: str,
    from_number: str,
    settings: CallSettings,
    trunk: TrunkRoute,
) -> dict[str, Any]:
    """The Originate payload for one call attempt, keys and variables in the spec's order.

    Numbers are normalised to E.164 with the campaign's region for national formats. Lenient
    parsing is used because the numbers were validated when they entered the system, and the
    spec's own example numbers must reproduce. Raises `PayloadError` (a `ValueError`) naming
    the bad field.
    """
    template = OriginateTemplate.build(from_number=from_number, settings=settings, trunk=trunk)
    return template.payload(call_id, _number("to", to_number, settings.region))


@dataclass(frozen=True, slots=True)
class OriginateTemplate:
    """A campaign's Originate payload without its callee: checked and normalised once.

    The dispatcher builds one per campaign and tick, then one payload per contact from the
    contact's stored E.164 number, without parsing the campaign's numbers again each time.
    """

    settings: CallSettings
    trunk: TrunkRoute
    caller: str
    transfer: str
    callerid: str
    transfer_dial: str = ""  # '' when the dialplan's default dial string is the right one

    @classmethod
    def build(
        cls, *, from_number: str, settings: CallSettings, trunk: TrunkRoute
    ) -> OriginateTemplate:
        if not _DTMF_KEY.match(settings.press_key or ""):
            raise PayloadError(f"press key {settings.press_key!r} is not one DTMF key (0-9, *, #)")
        if isinstance(settings.priority, bool) or settings.priority < 1:
            raise PayloadError(f"priority must be an integer >= 1, got {settings.priority!r}")
        if isinstance(settings.timeout_ms, bool) or settings.timeout_ms <= 0:
            raise PayloadError(
                f"timeout must be a positive number of ms, got {settings.timeout_ms!r}"
            )
        for field_name in ("context", "exten"):
            if not getattr(settings, field_name):
                raise PayloadError(f"{field_name} must not be empty")
        if not trunk.name:
            raise PayloadError("trunk name must not be empty")
        # The template must have its {number} placeholder, and give a dial string Dial() and
        # the AMI header can carry whole.
        if _DIAL_STRING_FORBIDDEN.intersection(trunk.channel_for("")):
            raise PayloadError(
                f"channel template {trunk.channel_template!r} (trunk {trunk.name!r}) must not "
                "give commas, line breaks or NUL characters"
            )
        if _DIAL_STRING_FORBIDDEN.intersection(settings.transfer_queue):
            raise PayloadError(
                f"transfer queue {settings.transfer_queue!r} must not contain commas, line "
                "breaks or NUL characters"
            )
        if _DIAL_STRING_FORBIDDEN.intersection(settings.transfer_prefix):
            raise PayloadError(
                f"transfer prefix {settings.transfer_prefix!r} must not contain commas, line "
                "breaks or NUL characters"
            )
        caller = _number("from", from_number, settings.region)
        transfer = (
            _number("transfer number", settings.transfer_number, settings.region)
            if settings.transfer_number
            else ""
        )
        name = settings.caller_id_name or caller
        if _CALLER_NAME_FORBIDDEN.intersection(name):
            raise PayloadError(f'caller name {name!r} must not contain ", <, > or \\')
        transfer_dial = trunk.transfer_dial(settings.transfer_prefix + transfer) if transfer else ""
        return cls(settings, trunk, caller, transfer, f'"{name}" <{caller}>', transfer_dial)

    def payload(self, call_id: str, to_e164: str, caller: str | None = None) -> dict[str, Any]:
        """The payload for one call to `to_e164`, a number already in E.164 form; `caller`, an
        E.164 number from the campaign's caller-ID pool, goes where the campaign's caller ID
        goes (`callerid`, `from`, `FROM_NUMBER`)."""
        if not _CALL_ID.match(call_id or ""):
            raise PayloadError(f"call id {call_id!r} is not of the form <epoch_ms>_<n>")
        if not is_e164(to_e164):
            raise PayloadError(f"to: {to_e164!r} is not an E.164 number of a known country")
        settings = self.settings
        callerid = self.callerid
        if caller is not None and caller != self.caller:
            if not is_e164(caller):
                raise PayloadError(f"from: {caller!r} is not an E.164 number of a known country")
            callerid = f'"{settings.caller_id_name or caller}" <{caller}>'
        else:
            caller = self.caller
        lower: dict[str, str] = {
            "to": to_e164,
            "from": caller,
            "transfer_number": self.transfer,
            "ivr_file": settings.ivr_file,
            "ivr_vm_file": settings.ivr_vm_file,
            "wait_strategy": settings.wait_strategy,
            "press_key": settings.press_key,
            "amd_enabled": "true" if settings.amd_enabled else "false",
            "transfer_prefix": settings.transfer_prefix,
            "custom_call_id": call_id,
            "trunk": self.trunk.name,
        }
        variables = dict(lower)
        for upper, source in UPPERCASE_VARIABLES:
            variables[upper] = lower[source]
        if self.transfer_dial:
            variables["transfer_dial"] = self.transfer_dial
            variables["TRANSFER_DIAL"] = self.transfer_dial
        if settings.transfer_queue:
            variables["transfer_queue"] = settings.transfer_queue
            variables["TRANSFER_QUEUE"] = settings.transfer_queue
        return {
            "action": "Originate",
            "actionid": call_id,
            "channel": self.trunk.channel_for(to_e164),
            "context": settings.context,
            "exten": settings.exten,
            "priority": settings.priority,
            "callerid": callerid,
            "timeout": settings.timeout_ms,
            "async": True,
            "variable": variables,
        }


def _number(field_name: str, raw: str, region: str) -> str:
    try:
        return to_e164(raw, region, strict=False)
    except ValueError as exc:
        raise PayloadError(f"{field_name}: {exc}") from None
