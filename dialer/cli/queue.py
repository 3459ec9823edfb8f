"""`dialer queue`: Asterisk call queues (app_queue) and their members, over the AMI."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from dialer.cli.call import control_errors, quiet_adapter
from dialer.cli.common import echo_table, json_option
from dialer.control import live
from dialer.control import plan as cc
from dialer.settings import DEFAULT_PBX, get_settings

pbx_option = click.option(
    "--pbx", default=DEFAULT_PBX, show_default=True, help="Which PBX (AMI server)."
)


@click.group()
def queue() -> None:
    """Call queues on the PBX: status, and adding or removing members.

    \b
    Example:
        dialer queue status support
        dialer queue add support PJSIP/agent1 --member-name "Agent 1"
        dialer queue pause PJSIP/agent1 --reason lunch
    """
    quiet_adapter()


@queue.command()
@click.argument("name", required=False)
@pbx_option
@json_option
def status(name: str | None, pbx: str, as_json: bool) -> None:
    """Show queues (or queue NAME): their figures, members and waiting callers.

    \b
    Example:
        dialer queue status
        dialer queue status support --json
    """
    with control_errors():
        wanted = cc.queue_name(name) if name is not None else None
        server = get_settings().ami_for(pbx)
        queues = asyncio.run(live.queue_status(server, wanted))
    if as_json:
        click.echo(live.to_json(queues))
        return
    if not queues:
        click.echo("no queues")
    for index, found in enumerate(queues):
        if index:
            click.echo("")
        _print_queue(found)


def _print_queue(found: dict[str, Any]) -> None:
    click.echo(
        f"{found['queue']}: {found['strategy']}, {found['calls']} waiting, "
        f"{found['completed']} completed, {found['abandoned']} abandoned, "
        f"hold {found['holdtime']}s, talk {found['talktime']}s"
    )
    if found["members"]:
        columns = ("name", "interface", "status", "paused", "in_call", "penalty", "calls_taken")
        echo_table(found["members"], columns)
    else:
        click.echo("no members")
    if found["callers"]:
        echo_table(found["callers"], ("position", "channel", "caller", "wait"))


@queue.command()
@click.argument("name")
@click.argument("interface")
@click.option("--member-name", help="The member's name in queue status [default: INTERFACE].")
@click.option(
    "--penalty", type=click.IntRange(0), default=0, show_default=True, help="Member penalty."
)
@click.option("--paused", is_flag=True, help="Add the member paused.")
@click.option(
    "--wrapuptime",
    type=click.IntRange(0),
    help="Seconds after each call before the member is rung again [default: the queue's].",
)
@pbx_option
@json_option
def add(
    name: str,
    interface: str,
    member_name: str | None,
    penalty: int,
    paused: bool,
    wrapuptime: int | None,
    pbx: str,
    as_json: bool,
) -> None:
    """Add INTERFACE (a channel such as PJSIP/agent1) to queue NAME as a dynamic member.

    \b
    Example:
        dialer queue add support PJSIP/agent1 --member-name "Agent 1" --penalty 1
    """
    with control_errors():
        queue_name, member = cc.queue_name(name), cc.interface_name(interface)
        headers = cc.queue_add_headers(
            queue_name, member, member_name=member_name, penalty=penalty, paused=paused,
            wrapuptime=wrapuptime,
        )  # fmt: skip
        server = get_settings().ami_for(pbx)
        message = asyncio.run(
            live.queue_member(server, headers, queue=queue_name, interface=member)
        )
    data = {"queue": queue_name, "interface": member, "added": True, "message": message}
    if as_json:
        click.echo(live.to_json(data))
    else:
        click.echo(f"added {member} to queue {queue_name}")


@queue.command()
@click.argument("name")
@click.argument("interface")
@pbx_option
@json_option
def remove(name: str, interface: str, pbx: str, as_json: bool) -> None:
    """Remove member INTERFACE from queue NAME.

    \b
    Example:
        dialer queue remove support PJSIP/agent1
    """
    with control_errors():
        queue_name, member = cc.queue_name(name), cc.interface_name(interface)
        server = get_settings().ami_for(pbx)
        message = asyncio.run(
            live.queue_member(
                server,
                cc.queue_remove_headers(queue_name, member),
                queue=queue_name,
                interface=member,
            )
        )
    data = {"queue": queue_name, "interface": member, "removed": True, "message": message}
    if as_json:
        click.echo(live.to_json(data))
    else:
        click.echo(f"removed {member} from queue {queue_name}")


@queue.command()
@click.argument("interface")
@click.option("--queue", "name", help="Only in this queue [default: every queue of INTERFACE].")
@click.option("--unpause", is_flag=True, help="Take calls again.")
@click.option("--reason", help="Why (shown in queue status and the QueueMemberPause event).")
@pbx_option
@json_option
def pause(
    interface: str, name: str | None, unpause: bool, reason: str | None, pbx: str, as_json: bool
) -> None:
    """Pause member INTERFACE: it finishes its call and takes no new one until unpaused.
    Queue-paced campaigns count it out at once.

    \b
    Example:
        dialer queue pause PJSIP/agent1 --reason lunch
        dialer queue pause PJSIP/agent1 --unpause
        dialer queue pause PJSIP/agent1 --queue sales
    """
    with control_errors():
        queue_name = cc.queue_name(name) if name is not None else None
        member = cc.interface_name(interface)
        headers = cc.queue_pause_headers(queue_name, member, paused=not unpause, reason=reason)
        server = get_settings().ami_for(pbx)
        message = asyncio.run(
            live.queue_member(server, headers, queue=queue_name or "any queue", interface=member)
        )
    data = {"interface": member, "queue": queue_name, "paused": not unpause, "message": message}
    if as_json:
        click.echo(live.to_json(data))
    else:
        where = f"in queue {queue_name}" if queue_name else "in its queues"
        click.echo(f"{'unpaused' if unpause else 'paused'} {member} {where}")
