"""A tiny real IMAP server that refuses every login with a scripted answer, in whatever bytes it is given.

pymap words its own refusals (UTF-8, ASCII in practice); a server answering ``NO`` in Latin-1
(``a1 NO [AUTHENTICATIONFAILED] Identifiants invalides \\xe9``) needs a peer that writes raw bytes. This one
greets, answers CAPABILITY and LOGOUT, and answers LOGIN (or AUTHENTICATE) with ``<tag> <refusal>``. It
runs on its own loop in a thread, like the other peers; ``logins`` counts the refusals it sent.
"""

from __future__ import annotations

import asyncio
import threading

from tests.servers.threaded_loop import ThreadedListener

_CAPABILITIES = b"IMAP4rev1 AUTH=PLAIN"


class RefusingImapServer(ThreadedListener):
    def __init__(
        self, refusal: bytes = b"NO [AUTHENTICATIONFAILED] Invalid credentials", *, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(host, name="refusing-imap")
        self._lock = threading.Lock()
        self._refusal = refusal
        self._logins = 0

    def set_refusal(self, refusal: bytes) -> None:
        """The answer to the next logins, after the tag: ``b"NO [AUTHENTICATIONFAILED] refus\\xe9"``."""
        with self._lock:
            self._refusal = refusal

    @property
    def logins(self) -> int:
        with self._lock:
            return self._logins

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY " + _CAPABILITIES + b"] refusing IMAP ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + _CAPABILITIES + b"\r\n" + tag + b" OK done\r\n")
            elif command in (b"LOGIN", b"AUTHENTICATE"):
                with self._lock:
                    self._logins += 1
                    refusal = self._refusal
                writer.write(tag + b" " + refusal + b"\r\n")
            elif command == b"LOGOUT":
                writer.write(b"* BYE logging out\r\n" + tag + b" OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" BAD unexpected command\r\n")
            await writer.drain()
