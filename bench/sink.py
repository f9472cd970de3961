"""The benchmarks' SMTP sink: aiosmtpd in a process of its own, counting what it accepts.

    python bench/sink.py SMTP_PORT CONTROL_PORT

Accepts any AUTH (or none) without TLS, answers DATA with Postfix's wording, and records each message's
Message-ID with the wall-clock time (time.time()) at which DATA completed. A line protocol on the control
port lets the benchmark read it: `count` (with the last acceptance time), `reset`, `records` (one JSON
array), `turnaround` (percentiles of the clients' turnaround, below) and `watch`, which streams one
`message-id<TAB>time` line per accepted message from then on. Prints "ready" once both listen.

Turnaround is the time from the sink's reply being written to the client's next line arriving: how long
the client took to act on a reply. With a fixed number of connections each waiting on its replies, it is
what separates one client's throughput from another's on the same sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Sink:
    def __init__(self) -> None:
        self.count = 0
        self.records: list[tuple[str, float]] = []
        self.watchers: set[asyncio.StreamWriter] = set()
        self.turnarounds: list[float] = []

    def turnaround(self) -> dict[str, Any]:
        t = sorted(self.turnarounds)
        if not t:
            return {"n": 0}
        n = len(t)
        return {
            "n": n,
            **{f"p{p}_ms": round(1000 * t[min(n - 1, n * p // 100)], 3) for p in (50, 90, 99)},
        }

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        received = time.time()
        content = envelope.original_content or b""
        head = content[: content.find(b"\r\n\r\n")]
        match = _MESSAGE_ID.search(head)
        message_id = match.group(1).decode("ascii", "replace") if match else ""
        self.count += 1
        self.records.append((message_id, received))
        if self.watchers:
            line = f"{message_id}\t{received:.6f}\n".encode()
            for writer in list(self.watchers):
                writer.write(line)
        return f"250 2.0.0 Ok: queued as Q{self.count}"

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                command = line.strip().decode()
                if command == "count":
                    last = self.records[-1][1] if self.records else None
                    writer.write(json.dumps({"count": self.count, "last": last}).encode() + b"\n")
                elif command == "reset":
                    self.count = 0
                    self.records.clear()
                    self.turnarounds.clear()
                    writer.write(b'{"ok": true}\n')
                elif command == "turnaround":
                    writer.write(json.dumps(self.turnaround()).encode() + b"\n")
                elif command == "records":
                    writer.write(json.dumps(self.records).encode() + b"\n")
                elif command == "watch":
                    self.watchers.add(writer)
                    writer.write(b"watching\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the sink is stopping
        finally:
            self.watchers.discard(writer)
            writer.close()


class TimedSMTP(SMTP):
    """aiosmtpd's server, noting when each reply is written and when the client's next line arrives."""

    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink
        self._replied_at: float | None = None

    async def push(self, status: Any) -> None:
        await super().push(status)
        self._replied_at = time.perf_counter()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        read_line = self._reader.readuntil

        async def timed_read_line(separator: bytes = b"\n") -> bytes:
            line = await read_line(separator)
            if self._replied_at is not None:
                self._sink.turnarounds.append(time.perf_counter() - self._replied_at)
                self._replied_at = None
            return line

        self._reader.readuntil = timed_read_line  # type: ignore[method-assign]


def _accept_any(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


def _listening_socket(port: int) -> socket.socket:
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (Nagle + delayed ACK: +40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def main(smtp_port: int, control_port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return TimedSMTP(
            sink,
            hostname="sink.bench",
            authenticator=_accept_any,
            auth_require_tls=False,
            data_size_limit=None,
            enable_SMTPUTF8=True,
        )

    smtp = await loop.create_server(factory, sock=_listening_socket(smtp_port))
    ctl = await asyncio.start_server(sink.control, sock=_listening_socket(control_port))
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("ready", flush=True)
    async with smtp, ctl:
        await stop


if __name__ == "__main__":
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        runner(main(int(sys.argv[1]), int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
