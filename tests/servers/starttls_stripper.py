"""A TCP proxy that plays the network attacker against STARTTLS, in front of a real SMTP or IMAP server.

| mode         | what the client sees                                                                  |
| ------------ | ------------------------------------------------------------------------------------- |
| ``"strip"``  | the server's answers without STARTTLS (SMTP: the ``250-STARTTLS`` line of the EHLO     |
|              | answer; IMAP: the ``STARTTLS`` capability), everything else forwarded as it is         |
| ``"refuse"`` | STARTTLS offered (by the server behind), but the proxy answers the client's STARTTLS   |
|              | itself with a refusal (SMTP ``454 4.7.0``, IMAP ``NO``) and keeps relaying in clear     |
| ``"pass"``   | the server, untouched: once the client sends STARTTLS, bytes are only pumped both ways |

Every byte the client sent through is recorded (``client_bytes``): a test proves that no credential
crossed by searching them, whatever the server behind would have done with it. Runs on its own loop in a
thread, like the other peers.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Literal

from tests.servers.threaded_loop import ThreadedListener

Mode = Literal["strip", "refuse", "pass"]
Protocol = Literal["smtp", "imap"]

_SMTP_STARTTLS_LINE = re.compile(rb"^\d{3}[- ]STARTTLS\s*$", re.IGNORECASE)
_SMTP_FINAL_LINE = re.compile(rb"^\d{3}(?: |\r?\n|$)")
_IMAP_STARTTLS_CAPABILITY = re.compile(rb" STARTTLS(?=[ \]\r\n])", re.IGNORECASE)


def strip_smtp_reply(lines: list[bytes]) -> list[bytes]:
    """A multi-line SMTP reply without its STARTTLS line; the new last line ends the reply (``250 ``)."""
    kept = [line for line in lines if not _SMTP_STARTTLS_LINE.match(line)]
    if kept and len(kept) != len(lines):
        last = kept[-1]
        kept[-1] = last[:3] + b" " + last[4:]
    return kept


def strip_imap_line(line: bytes) -> bytes:
    """An IMAP response line without the STARTTLS capability (``* CAPABILITY`` or ``[CAPABILITY ...]``)."""
    if b"CAPABILITY" not in line.upper():
        return line
    return _IMAP_STARTTLS_CAPABILITY.sub(b"", line)


class StarttlsStripper(ThreadedListener):
    _hangups = (OSError, asyncio.IncompleteReadError)

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        protocol: Protocol,
        mode: Mode = "strip",
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host, name=f"starttls-stripper-{protocol}")
        self._target = (target_host, target_port)
        self._protocol: Protocol = protocol
        self._lock = threading.Lock()
        self._mode: Mode = mode
        self._client_bytes = bytearray()
        self._starttls_seen = 0

    def set_mode(self, mode: Mode) -> None:
        """How the next connections are treated."""
        with self._lock:
            self._mode = mode

    @property
    def client_bytes(self) -> bytes:
        """Everything clients sent through the proxy, over all connections, in order."""
        with self._lock:
            return bytes(self._client_bytes)

    @property
    def starttls_seen(self) -> int:
        """STARTTLS commands clients sent (forwarded or answered by the proxy)."""
        with self._lock:
            return self._starttls_seen

    def clear(self) -> None:
        with self._lock:
            self._client_bytes.clear()
            self._starttls_seen = 0

    # -- proxy side (runs on the proxy's thread) -----------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            mode = self._mode
        up_reader, upstream = await asyncio.open_connection(*self._target)
        raw = asyncio.Event()  # set once STARTTLS went to the server: from then on, opaque bytes
        with self._owned(upstream):
            await asyncio.gather(
                self._from_client(reader, upstream, writer, mode, raw),
                self._from_server(up_reader, writer, mode, raw),
            )

    def _record(self, data: bytes) -> None:
        with self._lock:
            self._client_bytes += data

    def _is_starttls(self, line: bytes) -> bool:
        words = line.split()
        if self._protocol == "smtp":
            return len(words) == 1 and words[0].upper() == b"STARTTLS"
        return len(words) == 2 and words[1].upper() == b"STARTTLS"

    async def _from_client(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        mode: Mode,
        raw: asyncio.Event,
    ) -> None:
        try:
            while not raw.is_set() and (line := await reader.readline()):
                self._record(line)
                if self._is_starttls(line):
                    with self._lock:
                        self._starttls_seen += 1
                    if mode == "refuse":
                        client.write(self._refusal(line))
                        await client.drain()
                        continue
                    raw.set()
                upstream.write(line)
                await upstream.drain()
            while data := await reader.read(65536):
                self._record(data)
                upstream.write(data)
                await upstream.drain()
        finally:
            _close(upstream)

    def _refusal(self, line: bytes) -> bytes:
        if self._protocol == "smtp":
            return b"454 4.7.0 TLS not available due to temporary reason\r\n"
        return line.split()[0] + b" NO STARTTLS not available\r\n"

    async def _from_server(
        self, up_reader: asyncio.StreamReader, client: asyncio.StreamWriter, mode: Mode, raw: asyncio.Event
    ) -> None:
        try:
            pending: list[bytes] = []  # an SMTP multi-line reply, until its last line
            while line := await up_reader.readline():
                if raw.is_set():  # the answer to STARTTLS; the TLS handshake follows
                    client.write(line)
                    await client.drain()
                    break
                if mode != "strip":
                    out = [line]
                elif self._protocol == "imap":
                    out = [strip_imap_line(line)]
                else:
                    pending.append(line)
                    if not _SMTP_FINAL_LINE.match(line):
                        continue
                    out, pending = strip_smtp_reply(pending), []
                client.write(b"".join(out))
                await client.drain()
            while data := await up_reader.read(65536):
                client.write(data)
                await client.drain()
        finally:
            _close(client)


def _close(writer: asyncio.StreamWriter) -> None:
    if writer.can_write_eof() and not writer.is_closing():
        try:
            writer.write_eof()
        except OSError:
            pass
