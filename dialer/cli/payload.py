"""`dialer payload`: show the Originate a call would send, without sending anything."""

from __future__ import annotations

import json
import time

import click

from dialer.ami import wire as amiwire
from dialer.dialing.payload import (
    DEFAULT_CHANNEL_TEMPLATE,
    DEFAULT_TRUNK,
    CallSettings,
    TrunkRoute,
    build_originate_payload,
    custom_call_id,
)


@click.group()
def payload() -> None:
    """Originate payloads: preview what the dialer sends to Asterisk.

    \b
    Example:
        dialer payload preview --to +15550000001 --from +15559990000 --ivr-file welcome_message
    """


@payload.command()
@click.option("--to", "to_number", required=True, help="Number to call (E.164 or national).")
@click.option("--from", "from_number", required=True, help="Caller ID number.")
@click.option("--transfer-number", default="", help="Where a caller who presses the key goes.")
@click.option("--transfer-prefix", default="", help="Dial prefix for the transfer leg.")
@click.option("--ivr-file", default="welcome_message", show_default=True, help="IVR prompt.")
@click.option("--ivr-vm-file", default="", help="Message left on answering machines.")
@click.option("--press-key", default="1", show_default=True, help="DTMF key that transfers.")
@click.option("--wait-strategy", default="random", show_default=True)
@click.option("--amd/--no-amd", "amd_enabled", default=True, show_default=True)
@click.option("--caller-name", default=None, help="Caller ID name (default: the number).")
@click.option("--context", default="DynamicIVR", show_default=True)
@click.option("--exten", default="s", show_default=True)
@click.option("--priority", default=1, show_default=True, type=int)
@click.option("--timeout", "timeout_ms", default=30000, show_default=True, type=int, help="ms")
@click.option("--trunk", default=DEFAULT_TRUNK, show_default=True, help="Trunk name.")
@click.option(
    "--channel-template",
    default=DEFAULT_CHANNEL_TEMPLATE,
    show_default=True,
    help="Dial string; {number} and {trunk} are substituted.",
)
@click.option("--call-id", default=None, help="custom_call_id, <epoch_ms>_<n> (default: now_0).")
@click.option("--region", default="US", show_default=True, help="Region for national numbers.")
@click.option("--wire", is_flag=True, help="Print the AMI frame instead of the JSON payload.")
@click.option(
    "--json", "as_json", is_flag=True, help="JSON output (with --wire: [header, value] pairs)."
)
def preview(
    to_number: str,
    from_number: str,
    transfer_number: str,
    transfer_prefix: str,
    ivr_file: str,
    ivr_vm_file: str,
    press_key: str,
    wait_strategy: str,
    amd_enabled: bool,
    caller_name: str | None,
    context: str,
    exten: str,
    priority: int,
    timeout_ms: int,
    trunk: str,
    channel_template: str,
    call_id: str | None,
    region: str,
    wire: bool,
    as_json: bool,
) -> None:
    """Print the Originate payload for one call (JSON), or with --wire the AMI frame.

    Nothing is sent. Invalid numbers and values Asterisk would misread (CR, LF, NUL, lines over
    1024 bytes) exit non-zero with the reason.

    \b
    Example:
        dialer payload preview --to +1234567890 --from +19876543210 \\
            --transfer-number +15551234567 --ivr-file appointment_reminder \\
            --ivr-vm-file appointment_reminder --trunk MC --call-id 1704067200000_12345
        dialer payload preview --to 5550000001 --from 5559990000 --wire
    """
    settings = CallSettings(
        context=context,
        exten=exten,
        priority=priority,
        timeout_ms=timeout_ms,
        ivr_file=ivr_file,
        ivr_vm_file=ivr_vm_file,
        transfer_number=transfer_number,
        transfer_prefix=transfer_prefix,
        press_key=press_key,
        wait_strategy=wait_strategy,
        amd_enabled=amd_enabled,
        caller_id_name=caller_name,
        region=region.upper(),
    )
    if call_id is None:
        call_id = custom_call_id(time.time_ns() // 1_000_000, 0)
    try:
        built = build_originate_payload(
            call_id=call_id,
            to_number=to_number,
            from_number=from_number,
            settings=settings,
            trunk=TrunkRoute(name=trunk, channel_template=channel_template),
        )
        # Validate as the adapter would, so a preview never shows a payload that cannot be sent.
        frame = amiwire.originate_frame(built)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if wire:
        if as_json:
            headers = amiwire.originate_headers(built)
            click.echo(json.dumps([[name, value] for name, value in headers], indent=2))
        else:
            click.echo(frame.decode().replace("\r\n", "\n"), nl=False)
    else:
        click.echo(json.dumps(built, indent=2))
