"""`dialer call ...` (transfer, hang up, record, read variables of a live call) and
`dialer channels`: thin wrappers over `dialer.control.live`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy import Engine

from dialer.ami.client import AmiError
from dialer.ami.wire import UnsafeHeaderValue
from dialer.cli.common import echo_table, json_option
from dialer.control import live
from dialer.control import plan as cc
from dialer.db import make_engine
from dialer.settings import DEFAULT_PBX, AmiServer, SettingsError, get_settings

Operation = Callable[
    [AmiServer, cc.CallRef, live.AttemptInfo | None, Engine], Awaitable[live.ControlResult]
]

pbx_option = click.option(
    "--pbx", help="Which PBX (AMI server) [default: the call's trunk's, else default]."
)


def quiet_adapter() -> None:
    # The adapter's connect/login lines are for long-running processes, not for one command.
    if get_settings().log_level != "DEBUG":
        logging.getLogger("dialer.ami.client").setLevel(logging.WARNING)


@click.group()
def call() -> None:
    """Live calls: transfer, hang up, record, read channel variables.

    CALL_ID is a call's custom_call_id (or its attempt id): its live channels are found on the
    PBX by Linkedid. A channel name (e.g. PJSIP/MC-0000002a) addresses that channel directly.

    \b
    Example:
        dialer call transfer 1767225600000_42 +12125550199
        dialer call hangup 1767225600000_42
    """
    quiet_adapter()


def parse_ref(text: str) -> cc.CallRef:
    try:
        return cc.parse_call_ref(text)
    except cc.InputError as exc:
        raise click.BadParameter(str(exc), param_hint="CALL_ID") from None


def run_on_call(call_ref: cc.CallRef, pbx: str | None, operation: Operation) -> live.ControlResult:
    """Find the attempt, run `operation` against the PBX, record what it did on the call."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with control_errors():
            attempt = None
            if call_ref.kind != "channel":
                with engine.connect() as conn:
                    attempt = live.find_attempt(conn, call_ref)
            server = settings.ami_for(pbx or (attempt.pbx if attempt else DEFAULT_PBX))
            result = asyncio.run(operation(server, call_ref, attempt, engine))
            target = attempt or live.attempt_for_call_id(engine, result.call_id)
            if target is not None and result.timeline is not None:
                live.record_control(engine, target.id, result.timeline, result.facts)
        return result
    finally:
        engine.dispose()


@contextmanager
def control_errors() -> Iterator[None]:
    """Operator errors as one line (exit 1), bad input as a usage error (exit 2)."""
    try:
        yield
    except cc.InputError as exc:
        raise click.BadParameter(str(exc)) from None
    except UnsafeHeaderValue as exc:
        raise click.BadParameter(f"refused: {exc}") from None
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    except cc.ControlError as exc:
        raise click.ClickException(str(exc)) from None
    except AmiError as exc:
        raise click.ClickException(f"PBX: {exc}") from None


def report(result: live.ControlResult, as_json: bool) -> None:
    """Print the steps and the result (warnings on stderr); exit 1 if it failed."""
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(live.to_json(result.as_dict()))
        if not result.ok:
            click.get_current_context().exit(1)
        return
    for step in result.steps:
        click.echo(step)
    if not result.ok:
        raise click.ClickException(result.summary)
    click.echo(result.summary)


# -- transfer --------------------------------------------------------------------------------------


@call.command()
@click.argument("call_id")
@click.argument("target", required=False)
@click.option("--queue", help="Transfer into this queue instead of to a TARGET.")
@click.option(
    "--context",
    help="Dialplan context of the destination [default: from-internal for extensions, "
    "dialer-transfer for +numbers, dialer-queue for queues].",
)
@click.option(
    "--attended",
    is_flag=True,
    help="Consult first: ring TARGET and bridge the call to it only once it answers.",
)
@click.option(
    "--require-agent",
    is_flag=True,
    help="With --queue: refuse (nothing sent) unless a member can answer (logged in, not "
    "paused, not unavailable). Without it such a transfer goes ahead with a warning.",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Blind: do not ask the PBX (ShowDialPlan) whether the destination exists first. Only "
    "for an AMI user without `reporting` or destinations ShowDialPlan cannot see (switches): "
    "a destination that does not exist drops the call.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.5, 600),
    default=10.0,
    show_default=True,
    help="Blind: seconds to follow the transfer before reporting it.",
)
@click.option(
    "--ring-timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Attended: seconds TARGET may ring.",
)
@pbx_option
@json_option
def transfer(
    call_id: str,
    target: str | None,
    queue: str | None,
    context: str | None,
    attended: bool,
    require_agent: bool,
    no_check: bool,
    timeout: float,
    ring_timeout: float,
    pbx: str | None,
    as_json: bool,
) -> None:
    """Transfer a live call's callee to TARGET (an extension, or a +number through the call's
    trunk) or to --queue NAME.

    Blind by default: a bridged call is moved with BlindTransfer, one still in the IVR with
    Redirect. Nothing is sent to the call until the PBX has confirmed that the destination
    exists (ShowDialPlan: a Redirect to a missing one drops the call; --no-check skips this)
    and, for a queue, that it exists; a queue where no member can answer is warned about
    (--require-agent refuses it). A +number is dialled through the call's trunk and the
    campaign's transfer prefix (set on the call's channel as DIALER_TRANSFER_DIAL first). The
    call's events then say whether it got there; a failure exits with status 1. --attended
    rings TARGET first and bridges the call to it only once it answers; if it does not, the
    call is left as it was.

    \b
    Example:
        dialer call transfer 1767225600000_42 +12125550199
        dialer call transfer 1767225600000_42 2001 --context from-internal
        dialer call transfer 1767225600000_42 --queue support --require-agent
        dialer call transfer 1767225600000_42 +12125550199 --attended
    """
    ref = parse_ref(call_id)
    with control_errors():
        destination = cc.plan_destination(target, queue=queue, context=context)
        if attended and destination.kind == "queue":
            raise cc.InputError("--attended", "a queue cannot be consulted; transfer to it blind")
        if require_agent and destination.kind != "queue":
            raise cc.InputError("--require-agent", "only for a transfer into a --queue")

    async def blind(server: AmiServer, ref: cc.CallRef, attempt: Any, engine: Engine) -> Any:
        return await live.blind_transfer(
            server,
            ref,
            attempt,
            destination,
            timeout=timeout,
            check=not no_check,
            require_agent=require_agent,
            lookup=lambda call: live.attempt_for_call_id(engine, call),
        )

    async def consult(server: AmiServer, ref: cc.CallRef, attempt: Any, engine: Engine) -> Any:
        return await live.attended_transfer(
            server,
            ref,
            attempt,
            destination,
            ring_timeout=ring_timeout,
            lookup=lambda call: live.attempt_for_call_id(engine, call),
        )

    report(run_on_call(ref, pbx, consult if attended else blind), as_json)


# -- hangup, record, vars --------------------------------------------------------------------------


@call.command()
@click.argument("call_id")
@click.option(
    "--cause",
    type=click.IntRange(1, 127),
    default=16,
    show_default=True,
    help="Q.850 hangup cause (16 normal clearing, 17 busy, 21 rejected).",
)
@click.option(
    "--retry",
    is_flag=True,
    help="Dial the contact again later, per the campaign's retry policy (its delay and max "
    "attempts). Without it the call ends as operator_hangup and the contact is not called "
    "again unless the campaign sets a retry delay for that outcome.",
)
@pbx_option
@json_option
def hangup(call_id: str, cause: int, retry: bool, pbx: str | None, as_json: bool) -> None:
    """Hang up a live call (its callee's channel; transfer legs follow), or one channel.

    The call attempt records that the operator ended it (written before the Hangup is sent,
    taken back if the channel stays up), whether the call is named by call id, attempt id or
    its own channel; hanging up a transfer or agent leg does not end the call.

    \b
    Example:
        dialer call hangup 1767225600000_42
        dialer call hangup 1767225600000_42 --retry
        dialer call hangup PJSIP/MC-0000002a --cause 21
    """

    async def operation(server: AmiServer, ref: cc.CallRef, attempt: Any, engine: Engine) -> Any:
        return await live.hangup(
            server,
            ref,
            attempt,
            cause=cause,
            retry=retry,
            marks=live.HangupMarks(engine),
            lookup=lambda call: live.attempt_for_call_id(engine, call),
        )

    report(run_on_call(parse_ref(call_id), pbx, operation), as_json)


@call.command()
@click.argument("call_id")
@click.option("--stop", is_flag=True, help="Stop the recording instead of starting it.")
@pbx_option
@json_option
def record(call_id: str, stop: bool, pbx: str | None, as_json: bool) -> None:
    """Record a live call with MixMonitor (or --stop it).

    The file is named after the call id (<call id>.wav, in Asterisk's monitor directory); it
    is stored on the call attempt (recording_file) and the call's timeline shows each start
    and stop. Recording again after a stop appends to the same file.

    \b
    Example:
        dialer call record 1767225600000_42
        dialer call record 1767225600000_42 --stop
    """

    async def operation(server: AmiServer, ref: cc.CallRef, attempt: Any, engine: Engine) -> Any:
        def running(call: str | None) -> str | None:
            found = attempt or live.attempt_for_call_id(engine, call)
            if found is None or not cc.recording_active(live.timeline(engine, found.id)):
                return None
            return found.recording_file or cc.recording_file(found.custom_call_id)

        return await live.record(server, ref, attempt, stop=stop, already_recording=running)

    report(run_on_call(parse_ref(call_id), pbx, operation), as_json)


@call.command("vars")
@click.argument("call_id")
@click.argument("names", nargs=-1, required=True)
@pbx_option
@json_option
def vars_(call_id: str, names: tuple[str, ...], pbx: str | None, as_json: bool) -> None:
    """Read channel variables (or functions such as CHANNEL(state)) of a live call's callee.

    \b
    Example:
        dialer call vars 1767225600000_42 AMDSTATUS DTMF_DIGIT "CHANNEL(state)"
    """
    ref = parse_ref(call_id)
    with control_errors():
        wanted = cc.variable_names(list(names))

    async def operation(server: AmiServer, ref: cc.CallRef, attempt: Any, _: Engine) -> Any:
        return await live.get_vars(server, ref, attempt, wanted)

    result = run_on_call(ref, pbx, operation)
    if as_json or not result.ok:
        report(result, as_json)
        return
    width = max(len(n) for n in result.data["variables"])
    for name, value in result.data["variables"].items():
        click.echo(f"{name.ljust(width)}  {value}")


# -- channels --------------------------------------------------------------------------------------

CHANNEL_COLUMNS = ("channel", "state", "call_id", "application", "data", "bridge", "duration")


@click.command()
@click.option("--call", "call_id", help="Only the channels of this call (custom_call_id).")
@click.option("--pbx", default=DEFAULT_PBX, show_default=True, help="Which PBX (AMI server).")
@json_option
def channels(call_id: str | None, pbx: str, as_json: bool) -> None:
    """List the PBX's live channels (CoreShowChannels), with the dialer call each belongs to.

    \b
    Example:
        dialer channels
        dialer channels --call 1767225600000_42 --json
    """
    quiet_adapter()
    with control_errors():
        wanted = cc.checked(call_id, "--call") if call_id is not None else None
        server = get_settings().ami_for(pbx)
        found = asyncio.run(live.list_channels(server))
    if wanted is not None:
        found = cc.call_channels(found, wanted)
    rows = [c.row() for c in found]
    if as_json:
        click.echo(live.to_json(rows))
    elif rows:
        echo_table(rows, CHANNEL_COLUMNS)
    else:
        click.echo("no channels")
