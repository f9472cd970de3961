"""A real IMAP server for tests: pymap's in-memory ``dict`` backend in a subprocess.

``pymap ... dict --demo-data`` serves user ``demouser``/``demopass`` with INBOX, Sent and Trash
(Sent already holds two demo messages and, importantly, carries no ``\\Sent`` special-use flag).
The mailbox state lives as long as the process, so tests share it: find your message by its
Message-ID, never by position or count.

Assertions read mailboxes with the stdlib ``imaplib`` in a worker thread, an IMAP client
independent of the aioimaplib code under test.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.servers.smtp import SelfSignedCert, free_port

_START_TIMEOUT = 15.0


@dataclass(frozen=True)
class StoredMessage:
    """A message as the IMAP server holds it."""

    raw: bytes
    flags: frozenset[str]


class ImapServer:
    """pymap on 127.0.0.1 (plain IMAP, or STARTTLS when given a certificate)."""

    def __init__(
        self,
        *,
        user: str = "demouser",
        password: str = "demopass",
        cert: SelfSignedCert | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        self.user = user
        self.password = password
        self._cert = cert
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @staticmethod
    def executable() -> str:
        """The ``pymap`` script installed next to this interpreter (the project's virtualenv)."""
        return str(Path(sys.executable).with_name("pymap"))

    def start(self) -> ImapServer:
        self.port = free_port(self.host)
        tls = (
            ["--cert", str(self._cert.cert_path), "--key", str(self._cert.key_path)]
            if self._cert
            else ["--no-tls"]
        )
        command = [
            self.executable(),
            "--host", self.host,
            "--port", str(self.port),
            *tls,
            "--no-service", "managesieve",
            "--no-service", "admin",
            "dict", "--demo-data",
            "--demo-user", self.user,
            "--demo-password", self.password,
        ]  # fmt: skip
        self._log = tempfile.NamedTemporaryFile(prefix="pymap-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        """Poll the port (bounded): pymap prints nothing when it is ready."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"pymap exited with {self._process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)  # start-up readiness, not a test result
        self.stop()
        raise RuntimeError(f"pymap did not listen on {self.host}:{self.port} within {_START_TIMEOUT}s")

    def log(self) -> str:
        if self._log is None:
            return ""
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ImapServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading back (stdlib imaplib in a thread) ---------------------------------------------------

    async def fetch_all(self, folder: str) -> list[bytes]:
        """The raw bytes of every message in ``folder``."""
        return [message.raw for message in await self.fetch_messages(folder)]

    async def fetch_messages(self, folder: str) -> list[StoredMessage]:
        """Every message in ``folder`` with its flags (read-only: fetching doesn't set \\Seen)."""
        return await asyncio.to_thread(self._fetch_sync, folder)

    async def find(self, folder: str, message_id: str) -> StoredMessage | None:
        """The message in ``folder`` whose Message-ID header is ``message_id`` (with or without <>)."""
        wanted = message_id.strip("<>").encode()
        for message in await self.fetch_messages(folder):
            match = re.search(rb"^Message-ID:\s*<?([^>\r\n]+)>?", message.raw, re.I | re.M)
            if match and match.group(1).strip() == wanted:
                return message
        return None

    async def create_folder(self, folder: str) -> None:
        """Create ``folder`` (the demo data's Trash is read-only: a test that needs another makes one)."""
        await asyncio.to_thread(self._create_sync, folder)

    def _create_sync(self, folder: str) -> None:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            client.login(self.user, self.password)
            status, data = client.create(f'"{folder}"')
            if status != "OK" and b"ALREADYEXISTS" not in b"".join(d for d in data if isinstance(d, bytes)):
                raise AssertionError(f"cannot create {folder!r}: {data!r}")
        finally:
            client.logout()

    def _fetch_sync(self, folder: str) -> list[StoredMessage]:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            if self._cert is not None:
                import ssl

                context = ssl.create_default_context(cafile=str(self._cert.cert_path))
                client.starttls(context)
            client.login(self.user, self.password)
            status, _ = client.select(f'"{folder}"', readonly=True)
            if status != "OK":
                raise AssertionError(f"cannot select {folder!r}")
            status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            if status != "OK":
                raise AssertionError(f"FETCH in {folder!r} failed: {data!r}")
            # imaplib yields (metadata, literal) tuples, each followed by the response's tail as bytes;
            # FLAGS may sit in either part depending on the order the server chose.
            found: list[tuple[bytes, bytes]] = []
            for item in data:
                if isinstance(item, tuple):
                    found.append((item[0], item[1]))
                elif isinstance(item, bytes) and found:
                    found[-1] = (found[-1][0] + item, found[-1][1])
            messages: list[StoredMessage] = []
            for meta, raw in found:
                flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
                names = frozenset(f.decode() for f in flags.group(1).split()) if flags else frozenset()
                messages.append(StoredMessage(raw=raw, flags=names))
            return messages
        finally:
            try:
                client.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
