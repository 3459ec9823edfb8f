"""Database operations written once, run two ways: a generator of their database calls.

An operation (`Steps`) yields each database call it needs as a callable (`Step`) and is sent
back the call's result (or thrown its exception, which it may handle); its own Python work runs
between the calls. `run_steps` runs everything in the calling thread. `run_steps_in_threads`
runs the Python work on the caller's event loop and each database call on a worker thread: a
process that also reads a socket (the listener) never has its parsing and the operation's
Python competing for the interpreter lock while the database works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
# A database call of an operation, run by whoever runs the operation.
Step = Callable[[], Any]
# An operation: a generator of its database calls, each sent back its call's result.
Steps = Generator[Step, Any, T]


def run_steps(steps: Steps[T]) -> T:
    """Run an operation in this thread, its database calls included."""
    send: Callable[[Any], Step] = steps.send
    value: Any = None
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value
        try:
            value, send = step(), steps.send
        except Exception as exc:  # the operation may handle it (a duplicate event)
            value, send = exc, steps.throw


async def run_steps_in_threads(steps: Steps[T]) -> T:
    """Run an operation on this event loop, each database call on a worker thread."""
    send: Callable[[Any], Step] = steps.send
    value: Any = None
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value
        try:
            value, send = await asyncio.to_thread(step), steps.send
        except Exception as exc:
            value, send = exc, steps.throw
