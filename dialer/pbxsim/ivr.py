"""The dialer's IVR context as the simulator plays it, emitting the project's UserEvents.

After answer: optional recording (DialerRecording), AMD (DialerAMD), then either the voicemail
path for machines (DialerVoicemail) or the prompt and Read() (DialerDTMF), and for the press key
the transfer (DialerTransfer, Dial, DialerTransferResult). Every UserEvent carries
`custom_call_id`, split on commas like the dialplan's UserEvent() arguments.

With TRANSFER_QUEUE set (it wins over TRANSFER_NUMBER) the press key puts the callee in that
queue instead, as the reference dialplan's `queue` branch does: DialerTransfer with
TRANSFER_QUEUE, Queue(${TRANSFER_QUEUE},c), then DialerTransferResult with QUEUESTATUS when the
agent hangs up, when the callee hangs up (the `h` extension), or at once for a queue that does
not exist.

The transfer dials TRANSFER_DIAL when the dialer sent it (the trunk's channel template), else
what the dialplan builds, `PJSIP/${TRANSFER_PREFIX}${TRANSFER_NUMBER}@${TRUNK}`: an endpoint
that does not exist fails the Dial() (CHANUNAVAIL). A Local call without TRANSFER_DIAL (a raw
test Originate) dials the number in its own callee context instead, a simulator convenience.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.pbxsim.behaviour import (
    Callee,
    DialTarget,
    amd_result,
    dial_target,
    dialer_variable,
    digit_pressed,
    user_event_fields,
)
from dialer.pbxsim.codes import is_false, is_true
from dialer.pbxsim.legs import dial

if TYPE_CHECKING:
    from dialer.pbxsim.calls import Call

STEP = "ivr"


class Ivr:
    def __init__(self, call: Call) -> None:
        self.call = call
        self.t = call.engine.timings
        self.started = call.engine.now()
        self.reading = False
        self.press_key = self.var("PRESS_KEY") or "1"

    def var(self, upper: str) -> str:
        """A dialer variable, sent in both cases; the uppercase one wins when both are set."""
        return dialer_variable(self.call.near.variables, upper)

    def _at(self, offset: float) -> float:
        """Delay until `offset` seconds after the IVR started (the answer)."""
        return self.started + offset - self.call.engine.now()

    def _user_event(self, name: str, *pairs: tuple[str, str]) -> None:
        call = self.call
        fields = user_event_fields([("custom_call_id", call.custom_call_id), *pairs])
        call.events.user_event(call.near, name, fields)

    def start(self) -> None:
        call, t = self.call, self.t
        if is_true(self.var("RECORD_CALLS")):
            call.after("ivr-recording", t.recording, self._recording)
        if is_false(self.var("AMD_ENABLED") or "true"):
            self._prompt()
            return
        call.near.at(12, "AMD", "")
        result = amd_result(call.callee)
        if result is None:
            return  # the callee hangs up while AMD listens
        delay = {
            Callee.MACHINE: t.amd_machine,
            Callee.SILENT: t.amd_silence,
        }.get(call.callee, t.amd_human)
        call.after(STEP, self._at(delay), self._amd, *result)

    def _recording(self) -> None:
        near = self.call.near
        near.mixmonitor = True
        self.call.events.mixmonitor(near, True)
        self._user_event("DialerRecording", ("RECORDING_FILE", f"{self.call.custom_call_id}.wav"))

    def _amd(self, status: str, cause: str) -> None:
        call, t = self.call, self.t
        call.near.set_vars({"AMDSTATUS": status, "AMDCAUSE": cause})
        call.near.at(13)
        self._user_event("DialerAMD", ("AMDSTATUS", status), ("AMDCAUSE", cause))
        if status == "MACHINE":
            offset = t.voicemail_machine if call.callee is Callee.MACHINE else t.voicemail_silence
            call.near.at(15, "WaitForSilence", "1200,1,10")
            call.after(STEP, self._at(offset), self._voicemail)
        else:
            self._prompt()

    def _prompt(self) -> None:
        call, t = self.call, self.t
        call.near.at(19, "Read", f"DTMF_DIGIT,{self.var('IVR_FILE')},1,,1,10")
        self.reading = True
        digit = digit_pressed(call.callee, self.press_key)
        if digit is None:
            call.after(STEP, self._at(t.read_timeout), self._read_done, "", "TIMEOUT")
        else:
            call.after(STEP, self._at(t.dtmf), self._dtmf_begin, digit)

    def _dtmf_begin(self, digit: str) -> None:
        self.call.events.dtmf_begin(self.call.near, digit)
        self.call.after(STEP, self.t.dtmf_length, self._dtmf_end, digit)

    def _dtmf_end(self, digit: str) -> None:
        self.call.events.dtmf_end(
            self.call.near, digit, int(self.t.dtmf_length * 1000 * self.call.engine.config.speed)
        )
        self.call.after(STEP, self.t.after_dtmf, self._read_done, digit, "OK")

    def digit_received(self, digit: str) -> None:
        """A digit from outside (Atxfer's feature code) ends the Read() like a keypress."""
        if self.reading:
            self.call.after(STEP, self.t.after_dtmf, self._read_done, digit, "OK")

    def _read_done(self, digit: str, status: str) -> None:
        call = self.call
        self.reading = False
        call.near.set_vars({"DTMF_DIGIT": digit, "READSTATUS": status})
        call.near.at(20)
        self._user_event("DialerDTMF", ("DTMF", digit), ("READSTATUS", status))
        queue, number = self.var("TRANSFER_QUEUE"), self.var("TRANSFER_NUMBER")
        if digit and digit == self.press_key and queue:
            call.after(STEP, self.t.after_dtmf, self._queue, queue)
        elif digit and digit == self.press_key and number:
            call.after(STEP, self.t.after_dtmf, self._transfer, number)
        else:
            call.near.at(22, "Hangup", "")
            call.hang_up()

    def _transfer(self, number: str) -> None:
        call = self.call
        dialled = self.var("TRANSFER_PREFIX") + number
        channel = self.var("TRANSFER_DIAL")
        if channel:
            target = dial_target(channel)
        elif call.near.tech == "PJSIP":
            endpoint = self.var("TRUNK") or call.target.endpoint
            target = DialTarget("PJSIP", f"{dialled}@{endpoint}", dialled, endpoint=endpoint)
            channel = f"PJSIP/{target.data}"
        else:
            context = call.target.context
            target = DialTarget("Local", f"{dialled}@{context}", dialled, context=context)
            channel = f"Local/{target.data}"
        call.near.at(24)
        self._user_event(
            "DialerTransfer", ("TRANSFER_NUMBER", number), ("TRANSFER_CHANNEL", channel)
        )
        call.near.at(25, "Dial", f"{channel},30,g")
        call.dial_mode = "ivr"
        dial(call, target, self.t.transfer_timeout)

    def _queue(self, name: str) -> None:
        call = self.call
        call.near.at(24)
        self._user_event("DialerTransfer", ("TRANSFER_QUEUE", name))
        call.near.set_vars({"DIALER_TRANSFER": "queued"})
        call.near.at(25, "Queue", f"{name},c")
        call.dial_mode = "ivr-queue"
        call.queue_report_due = True
        if not call.join_queue(name):
            call.near.at(26)
            call.report_queue_result()
            call.hang_up()

    def _voicemail(self) -> None:
        call = self.call
        vm_file = self.var("IVR_VM_FILE")
        call.near.at(17, "Playback", vm_file)
        self._user_event("DialerVoicemail", ("IVR_VM_FILE", vm_file), ("WAITSTATUS", "SILENCE"))
        call.hang_up()
