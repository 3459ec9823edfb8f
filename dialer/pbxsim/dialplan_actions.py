"""ShowDialPlan (main/pbx.c manager_show_dialplan): the simulated dialplan's contexts and
extensions, with Asterisk's answers when a context or an extension is not there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialer.pbxsim.wire import Message, action_id_line, encode, error, list_ack, list_complete

if TYPE_CHECKING:
    from dialer.pbxsim.actions import Handler
    from dialer.pbxsim.session import AmiSession

REGISTRAR = "pbx_config"


def show_dialplan(session: AmiSession, message: Message) -> None:
    """One ListDialplan event per priority of every extension that matches `Extension` (as
    the dialplan matches it: patterns too) in `Context` (every context without one). A context
    that does not exist, or no matching extension, is an error instead of a list."""
    wanted_context, wanted_exten = message.get("Context"), message.get("Extension")
    dialplan = session.sim.engine.dialplan
    names = [wanted_context] if wanted_context else list(dialplan.contexts)
    id_line = action_id_line(message)
    items: list[bytes] = []
    contexts = extensions = priorities = 0
    for name in names:
        context = dialplan.context(name)
        if context is None:
            continue
        contexts += 1
        for pattern in context.extensions(wanted_exten):
            extensions += 1
            for priority, (application, data) in enumerate(context.priorities(), start=1):
                priorities += 1
                items.append(
                    encode(
                        f"Event: ListDialplan\r\n{id_line}Context: {name}\r\n"
                        f"Extension: {pattern}\r\nPriority: {priority}\r\n"
                        f"Application: {application}\r\nAppData: {data}\r\n"
                        f"Registrar: {REGISTRAR}\r\n\r\n"
                    )
                )
    if wanted_context and not contexts:
        session.send(error(message, f"Did not find context {wanted_context}"))
        return
    if wanted_exten and not extensions:
        where = f"@{wanted_context}" if wanted_context else " in any context"
        session.send(error(message, f"Did not find extension {wanted_exten}{where}"))
        return
    session.send(list_ack(message, "DialPlan list will follow"))
    for item in items:
        session.send(item)
    session.send(
        list_complete(
            message,
            "ShowDialPlanComplete",
            len(items),
            [
                ("ListExtensions", str(extensions)),
                ("ListPriorities", str(priorities)),
                ("ListContexts", str(contexts)),
            ],
        )
    )


ACTIONS: dict[str, tuple[Handler, str, str]] = {
    "ShowDialPlan": (
        show_dialplan,
        "Show dialplan contexts and extensions",
        "config,reporting,all",
    ),
}
