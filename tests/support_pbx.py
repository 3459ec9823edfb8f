"""PBX simulator fixtures and AMI test tools.

`pbx_sim` yields a running simulator (its own thread, a free port on 127.0.0.1, speed 50,
recording every action to a JSONL file); options through indirect parametrisation:

    @pytest.mark.parametrize("pbx_sim", [{"speed": 100, "max_channels": 5}], indirect=True)
    def test_x(pbx_sim): ...

`pbx_sim_factory(**options)` starts more of them, each on its own free port. `tls_files` is a
CA and certificates made with the `openssl` command line for TLS simulators (`tls_cert`,
`tls_key` options). Also here: a blocking raw AMI client (`RawAmi`), frame parsing, and a
reader for the shared real-Asterisk transcripts.
"""

from __future__ import annotations

import ast
import concurrent.futures
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from dialer.pbxsim import SimConfig, SimulatorThread, start_in_thread
from dialer.pbxsim.record import read_records
from dialer.settings import AmiServer

DEFAULT_SPEED = 50.0
TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "ami-transcripts"


@dataclass
class PbxSim:
    """A running simulator as tests see it."""

    config: SimConfig
    thread: SimulatorThread | None = None
    errors_seen: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        assert self.thread is not None
        return self.thread.host

    @property
    def port(self) -> int:
        assert self.thread is not None
        return self.thread.port

    @property
    def username(self) -> str:
        return self.config.username

    @property
    def secret(self) -> str:
        return self.config.secret

    @property
    def speed(self) -> float:
        return self.config.speed

    @property
    def server(self) -> AmiServer:
        return AmiServer("default", self.host, self.port, self.username, self.secret)

    def server_as(self, name: str = "default", **fields: Any) -> AmiServer:
        """How a client reaches it, under PBX `name`, with AmiServer fields (tls, auth...)."""
        return replace(self.server, name=name, **fields)

    def set_capacity(self, **limits: Any) -> dict[str, Any]:
        """`PbxSimulator.set_capacity` (cps, channels, max_wait) from the test's thread."""
        assert self.thread is not None
        return self.thread.set_capacity(**limits)

    def capacity(self) -> dict[str, Any]:
        assert self.thread is not None
        return self.thread.capacity()

    def start(self) -> PbxSim:
        self.thread = start_in_thread(self.config)
        # Later restarts reuse the port, as a restarted Asterisk would.
        self.config = replace(self.config, port=self.thread.port)
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.errors_seen += self.errors()
            self.thread.stop()
            self.thread = None

    def restart(self, **options: Any) -> None:
        """Stop (dropping every session and call) and start again on the same port."""
        self.stop()
        self.config = replace(self.config, **options)
        self.start()

    def core_restart(self, down_for: float = 0.5) -> concurrent.futures.Future[None]:
        """`core restart now` (see PbxSimulator.restart): returns once every call is hung up
        and actions are refused; the future is done when it listens again."""
        assert self.thread is not None
        return self.thread.restart(down_for)

    def records(self) -> list[dict[str, Any]]:
        """The actions received so far (one dict per action, see dialer.pbxsim.record)."""
        return read_records(self.config.record) if self.config.record else []

    def active_calls(self) -> int:
        assert self.thread is not None
        return self.thread.call(lambda sim: sim.active_calls())

    def errors(self) -> list[str]:
        """Exceptions the simulator caught in its actions and call steps."""
        assert self.thread is not None
        return self.thread.call(lambda sim: sim.errors)

    def connect(self, *, login: bool = True, events: str = "on") -> RawAmi:
        client = RawAmi(self.host, self.port)
        if login:
            client.login(self.username, self.secret, events=events)
        return client


def make_sim(record: Path, **options: Any) -> PbxSim:
    options.setdefault("speed", DEFAULT_SPEED)
    options.setdefault("port", 0)
    options.setdefault("host", "127.0.0.1")
    if "record" not in options:
        options["record"] = record
    return PbxSim(SimConfig(**options)).start()


@pytest.fixture
def pbx_sim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PbxSim]:
    options = dict(getattr(request, "param", None) or {})
    sim = make_sim(tmp_path / "pbx-actions.jsonl", **options)
    try:
        yield sim
    finally:
        sim.stop()
    assert sim.errors_seen == [], "the simulator raised while running the test"


@pytest.fixture
def pbx_sim_factory(tmp_path: Path) -> Iterator[Callable[..., PbxSim]]:
    started: list[PbxSim] = []

    def factory(**options: Any) -> PbxSim:
        sim = make_sim(tmp_path / f"pbx-actions-{len(started)}.jsonl", **options)
        started.append(sim)
        return sim

    try:
        yield factory
    finally:
        for sim in started:
            sim.stop()
    assert [e for sim in started for e in sim.errors_seen] == []


# -- TLS ------------------------------------------------------------------------------------------

OPENSSL = "/usr/bin/openssl"


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate it signed for localhost and 127.0.0.1 (`cert`, `key`), one
    it signed for another host name only (`other_name_cert`, `other_name_key`), and a CA that
    signed none of them (`other_ca`)."""

    ca: Path
    cert: Path
    key: Path
    other_name_cert: Path
    other_name_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_server_cert(
    directory: Path, name: str, ca: tuple[Path, Path], alt_names: str
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory,
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "test-ca")
    cert, key = _make_server_cert(directory, "pbx", ca, "DNS:localhost,IP:127.0.0.1")
    other_cert, other_key = _make_server_cert(directory, "elsewhere", ca, "DNS:pbx.invalid")
    other_ca, _ = _make_ca(directory, "other-ca")
    return TlsFiles(ca[0], cert, key, other_cert, other_key, other_ca)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# -- frames ---------------------------------------------------------------------------------------


@dataclass
class Frame:
    """One AMI frame: its lines in order; `get` returns the first value of a header."""

    lines: list[tuple[str, str]]

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.lines:
            if key == name:
                return value
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return any(key == name for key, _ in self.lines)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.lines if key == name]

    @property
    def name(self) -> str:
        return self.get("Event") or f"Response:{self.get('Response')}"

    @property
    def is_event(self) -> bool:
        return "Event" in self

    def chanvars(self) -> dict[str, str]:
        return dict(v.split("=", 1) for v in self.all("ChanVariable"))


def parse_frame(text: str) -> Frame:
    pairs = []
    for line in text.split("\r\n"):
        key, _, value = line.partition(": ")
        if line.endswith(":") and not value:
            key = line[:-1]
        pairs.append((key, value))
    return Frame(pairs)


class RawAmi:
    """A blocking AMI client over a plain socket: exactly the bytes given, frames back."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.frames: list[Frame] = []
        self.closed = False
        self.greeting = self._read_line()
        self._ids = iter(range(1, 1_000_000))

    def _read_line(self) -> str:
        while b"\r\n" not in self.buffer:
            self._recv()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def _recv(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        if not data:
            self.closed = True
            raise ConnectionError("connection closed by the simulator")
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.frames.append(parse_frame(raw.decode("utf-8", "surrogateescape")))
        return True

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, action: str, *headers: tuple[str, str], action_id: str | None = None) -> str:
        action_id = action_id or f"t-{next(self._ids)}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame (received before or after the call) matching; it is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for index, frame_ in enumerate(self.frames):
                if predicate(frame_):
                    del self.frames[index]
                    return frame_
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame in {timeout}s; have {self.names()}")
            self._recv(timeout=remaining)

    def peek_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """Like wait_for, but the frame stays buffered for later readers."""
        frame_ = self.wait_for(predicate, timeout)
        self.frames.insert(0, frame_)
        return frame_

    def response(self, action_id: str, timeout: float = 5.0) -> Frame:
        return self.wait_for(lambda f: "Response" in f and f.get("ActionID") == action_id, timeout)

    def action(self, action: str, *headers: tuple[str, str], timeout: float = 5.0) -> Frame:
        return self.response(self.send(action, *headers), timeout)

    def collect(self, until: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
        """Every frame up to and including the first one matching `until` (all consumed)."""
        deadline = time.monotonic() + timeout
        seen: list[Frame] = []
        while True:
            while self.frames:
                frame_ = self.frames.pop(0)
                seen.append(frame_)
                if until(frame_):
                    return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met in {timeout}s; saw {[f.name for f in seen]}")
            self._recv(timeout=remaining)

    def drain(self, seconds: float) -> list[Frame]:
        """Everything that arrives within `seconds` (and what was already buffered)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._recv(timeout=remaining)
            except ConnectionError:
                break
        seen, self.frames = self.frames, []
        return seen

    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    def login(self, username: str, secret: str, *, events: str = "on") -> Frame:
        """Log in; with all events on, the login's own FullyBooted/SuccessfulAuth are consumed."""
        reply = self.action("Login", ("Username", username), ("Secret", secret), ("Events", events))
        assert reply["Response"] == "Success", reply
        if events == "on":
            self.wait_for(lambda f: f.get("Event") == "FullyBooted")
            self.wait_for(lambda f: f.get("Event") == "SuccessfulAuth")
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawAmi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- transcripts ----------------------------------------------------------------------------------

_MARKER = re.compile(r"^(<<<|>>>) \+([\d.]+)s (RECV|SENT)(?: \[(\w+)\])?")


@dataclass
class TranscriptEntry:
    direction: str  # "sent" or "recv"
    at: float  # seconds since the recording started
    connection: str  # "conn1"... or "c1" when the file has one connection
    frames: list[bytes] = field(default_factory=list)  # sent: exact bytes of each action


@dataclass
class Transcript:
    name: str
    entries: list[TranscriptEntry]

    def sent(self, connection: str | None = None) -> list[TranscriptEntry]:
        return [
            e
            for e in self.entries
            if e.direction == "sent" and (connection is None or e.connection == connection)
        ]

    def received(self, connection: str | None = None) -> list[Frame]:
        frames = []
        for entry in self.entries:
            if entry.direction == "recv" and (connection is None or entry.connection == connection):
                frames.extend(
                    parse_frame(raw.decode("utf-8", "surrogateescape")) for raw in entry.frames
                )
        return frames

    def connections(self) -> list[str]:
        seen: list[str] = []
        for entry in self.entries:
            if entry.connection not in seen:
                seen.append(entry.connection)
        return seen

    def start_of(self, connection: str) -> float:
        return next(e.at for e in self.entries if e.connection == connection)


def load_transcript(name: str) -> Transcript:
    """Parse a tests/data/ami-transcripts file. A `!raw b'...'` line gives the exact bytes of the
    line above it (a value holding a bare LF); a blank line inside a SENT block separates
    actions sent in one write."""
    path = TRANSCRIPTS / f"{name}.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    entries: list[TranscriptEntry] = []
    index = 0
    while index < len(lines):
        match = _MARKER.match(lines[index])
        index += 1
        if not match:
            continue
        direction = "sent" if match.group(1) == ">>>" else "recv"
        entry = TranscriptEntry(direction, float(match.group(2)), match.group(4) or "c1")
        if "greeting line" in lines[index - 1]:
            index += 1
            continue
        block: list[bytes] = []
        while (
            index < len(lines)
            and not _MARKER.match(lines[index])
            and not lines[index].startswith("###")
        ):
            line = lines[index]
            if line.startswith("!raw "):
                block[-1] = ast.literal_eval(line[5:])
            else:
                block.append(line.encode())
            index += 1
        frames: list[list[bytes]] = [[]]
        for raw in block:
            if raw == b"":
                if frames[-1]:
                    frames.append([])
            else:
                frames[-1].append(raw)
        for frame_lines in frames:
            if not frame_lines:
                continue
            if direction == "sent":
                entry.frames.append(b"\r\n".join(frame_lines) + b"\r\n\r\n")
            else:
                entry.frames.append(b"\r\n".join(frame_lines))
        entries.append(entry)
    return Transcript(name, entries)


def require_transcripts() -> None:
    # They are part of the repository: a missing copy is a broken checkout, not a reason to skip.
    if not TRANSCRIPTS.is_dir():
        raise FileNotFoundError(f"AMI transcripts not found at {TRANSCRIPTS}")
