"""BlindTransfer and Atxfer on live channels, shaped after live_blindtransfer and live_atxfer, and
the Bridge action (features.c action_bridge) that joins two answered channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.pbxsim.behaviour import DialTarget
from dialer.pbxsim.channels import Bridge, Channel
from dialer.pbxsim.legs import dial
from dialer.pbxsim.parties import Party, enter, leave

if TYPE_CHECKING:
    from dialer.pbxsim.engine import Engine


def blind_transfer_error(engine: Engine, channel: Channel, context: str, exten: str) -> str | None:
    """Asterisk's refusal text, or None when the transfer can go ahead."""
    bridge = channel.bridge
    if bridge is None or bridge.peer_of(channel) is None:
        return "Transfer invalid"
    if not engine.dialplan.exists(context, exten, engine.queues.names()):
        return "Transfer invalid"
    return None


def blind_transfer(engine: Engine, channel: Channel, context: str, exten: str) -> None:
    """Send the bridge peer of `channel` to context,exten; `channel` (the transferer) hangs up."""
    events = engine.events
    if blind_transfer_error(engine, channel, context, exten) is not None:
        events.blind_transfer("Invalid", channel, None, "", context, exten)
        return
    bridge = channel.bridge
    assert bridge is not None
    transferee = bridge.peer_of(channel)
    assert transferee is not None
    transferer_party, transferee_party = channel.owner, transferee.owner
    assert isinstance(transferer_party, Party) and isinstance(transferee_party, Party)
    events.unhold(channel)
    snapshot = bridge.block()  # the event describes the bridge as the transfer found it
    # The transferee leaves without ending anything: it is on its way elsewhere.
    bridge.members.remove(transferee)
    transferee.bridge = None
    events.bridge_leave(bridge, transferee)
    transferee_party.leave_dialplan()
    transferer_party.dial_answered_at = None
    transferee_party.enter(context, exten)
    events.blind_transfer("Success", channel, transferee, snapshot, context, exten)
    transferer_party.hang_up()


def bridge_channels(engine: Engine, first: Channel, second: Channel) -> Bridge:
    """The Bridge action: each channel leaves its bridge and its dialplan, and both enter a new
    basic bridge. A party left alone in a bridge one of them left carries on as after any peer
    leaving (a dialled leg hangs up, a Dial() returns). When the new bridge ends, Asterisk sends
    the remaining channel on to its next priority; the simulated parties hang up there, as the
    reference dialplan does after its Read() and Dial()."""
    parties = []
    for channel in (first, second):
        party = channel.owner
        assert isinstance(party, Party)
        parties.append(party)
    left_alone: list[Party] = []
    for party in parties:
        peer = party.leave_bridge()
        party.leave_dialplan()
        if peer is not None and peer not in parties:
            left_alone.append(peer)
    bridge = Bridge()
    engine.events.bridge_create(bridge)
    enter(engine, bridge, first)
    enter(engine, bridge, second)
    for peer in left_alone:
        if not peer.ended:
            peer.peer_left()
    return bridge


class AttendedTransfer:
    """Atxfer on a bridged channel: the feature code and the extension arrive as DTMF, the
    transferer is held, consults the target in a second bridge, and hanging up completes the
    transfer (the held party and the target are joined); if the target hangs up first the
    transferer returns to the held party."""

    def __init__(self, engine: Engine, transferer: Channel, context: str, exten: str, code: str):
        self.engine = engine
        self.events = engine.events
        self.transferer = transferer
        party = transferer.owner
        assert isinstance(party, Party)
        self.party = party
        self.context = context
        self.exten = exten
        self.code = code
        self.original: Bridge | None = transferer.bridge
        self.second: Bridge | None = None
        self.saved_answered_at = party.dial_answered_at

    def start(self) -> None:
        t, party = self.engine.timings, self.party
        party.atxfer = self
        delay = 0.0
        for index, digit in enumerate(self.code):
            party.after(f"atxfer-code-{index}", delay, self._digit, digit)
            delay += t.atxfer_feature_gap
        delay += t.atxfer_hold - t.atxfer_feature_gap
        party.after("atxfer-hold", delay, self.events.hold, self.transferer)
        for index, digit in enumerate(self.exten):
            delay += t.atxfer_digit_gap
            party.after(f"atxfer-digit-{index}", delay, self._digit, digit)
        party.after("atxfer-dial", delay + t.atxfer_dial, self._dial)

    def _digit(self, digit: str) -> None:
        if self.transferer.alive:
            self.events.dtmf_end(self.transferer, digit, 0)

    def _dial(self) -> None:
        # Atxfer drops a leading '+': the dialled extension is digits only.
        number = self.exten.lstrip("+")
        if not self.engine.dialplan.exists(self.context, number):
            self.events.unhold(self.transferer)
            self.party.atxfer = None
            return
        dial(
            self.party,
            DialTarget("Local", f"{number}@{self.context}", number, context=self.context),
            self.engine.timings.transfer_timeout,
            _MoveToSecondBridge(self),
        )

    def consult_failed(self) -> None:
        """The target did not answer: the transferer is still with the held party."""
        self.party.atxfer = None
        if self.transferer.alive:
            self.events.unhold(self.transferer)

    def moved(self, bridge: Bridge) -> None:
        self.second = bridge

    def transferer_gone(self) -> None:
        """The transferer hangs up: with a consultation up, its two peers are joined."""
        party, original, second = self.party, self.original, self.second
        party.atxfer = None
        party.dial_answered_at = None
        if second is None or original is None or not original.members:
            return
        target = second.peer_of(self.transferer)
        if target is None:
            return
        self.events.bridge_merge(original, second)
        second.members.remove(target)
        self.events.bridge_leave(second, target)
        transferee = original.members[0]
        enter(self.engine, original, target)
        self.events.attended_transfer(self.transferer, original, second, transferee, target)
        target_party = target.owner
        if isinstance(target_party, Party):
            target_party.dial_answered_at = None

    def handles_peer_left(self, party: Party) -> bool:
        """The consulted target hung up first: back to the held party (True), or not ours."""
        second = self.second
        if second is None or self.transferer.bridge is not second:
            return False
        leave(self.engine, second, self.transferer)
        party.atxfer = None
        party.dial_answered_at = self.saved_answered_at
        if self.original is not None and self.original.members:
            enter(self.engine, self.original, self.transferer)
            self.events.unhold(self.transferer)
            return True
        party.peer_left()
        return True


class _MoveToSecondBridge:
    """Leg hooks: when the consulted target answers, the transferer leaves the held bridge."""

    def __init__(self, transfer: AttendedTransfer) -> None:
        self.transfer = transfer

    def dial_started(self, leg: object) -> None:
        return None

    def ended(self, leg: object, status: str) -> None:
        return None

    def answered(self, leg: object) -> None:
        transfer = self.transfer
        original = transfer.original
        transferer = transfer.transferer
        if original is not None and transferer in original.members:
            original.members.remove(transferer)
            transfer.events.bridge_leave(original, transferer)
            transferer.bridge = None
