"""A TCP proxy for tests that can black-hole its traffic: bytes are read and thrown away in
both directions while the connections stay open, as a network partition looks to both ends
(no FIN, no RST), and a side's close reaches the other only once the path is back. It runs
its own event loop in a thread, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.holes = threading.Event()  # set: traffic is thrown away
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> BlackHoleProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def black_hole(self, on: bool = True) -> None:
        if on:
            self.holes.set()
        else:
            self.holes.clear()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        # One end closed: the other learns it once the path is back, as a FIN crosses a
        # partition only when it heals.
        while self.holes.is_set():
            await asyncio.sleep(0.05)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        for each in (writer, up_writer):
            self._writers.discard(each)
            each.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if self.holes.is_set():
                continue  # lost on the way
            writer.write(data)
            await writer.drain()
