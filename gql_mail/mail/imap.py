"""Copy sent messages into an account's IMAP Sent folder, and prove IMAP login works.

Each call opens its own short session (connect, STARTTLS when offered, LOGIN, work, LOGOUT):
appends are rare next to sends, and a session per call means no connection state to keep
healthy between them.

aioimaplib (2.x) needs three things from us: every wait bounded (a dropped connection leaves its
commands pending forever, so we race each command against the connection-lost callback);
STARTTLS, which it lists but cannot perform (we upgrade the transport with ``loop.start_tls``);
and an answer to the server's error challenge during ``AUTHENTICATE XOAUTH2``, without which a
rejected token hangs until the timeout.

This module is gql-mail's only use of aioimaplib, internals included (hence the upper bound below its
next major in pyproject). Beyond ``IMAP4``'s commands it relies on: ``aioimaplib.Command`` (built as
``Command(name, tag, *args, loop=...)``, its ``_resp_lines`` and ``flush``), ``IMAP4.protocol``,
``IMAP4.tasks`` and ``IMAP4._client_task``, and on the protocol's ``new_tag``, ``execute(command,
scrub=...)``, ``simple_command``, ``capability``, ``logout``, ``capabilities``, ``state``, ``transport``
and ``tasks``, with the states ``NONAUTH``, ``AUTH`` and ``SELECTED``. tests/mail/test_imap_library.py
fails, naming what is missing, when a release lacks any of it.
Connections go through the outbound policy by overriding ``IMAP4.create_client(host, port, loop,
conn_lost_cb, ssl_context)``, which must set ``protocol`` (an ``IMAP4ClientProtocol(loop, conn_lost_cb)``,
whose ``welcome(line)`` judges the greeting) and ``_client_task``, and ``IMAP4.wait_hello_from_server``
(see ``_CheckedIMAP4``; tests/test_outbound_policy.py fails when they change).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib  # type: ignore[import-untyped]  # no py.typed marker in aioimaplib 2.x

from gql_mail.log_redaction import credentials_in_use
from gql_mail.mail.errors import MailError, classify_imap_exception, classify_imap_login_refusal
from gql_mail.mail.peer_text import FOREIGN_EXCERPT, peer_excerpt, peer_text
from gql_mail.mail.tls_policy import starttls_not_offered, starttls_refused
from gql_mail.outbound import OutboundPolicy

__all__ = ["ImapSettings", "append_to_sent", "find_sent_folder", "verify_imap"]

_T = TypeVar("_T")

# LOGOUT is a courtesy; a server that doesn't answer it quickly must not hold a worker.
_LOGOUT_TIMEOUT = 5.0
# A server may answer (LOGIN ... NO) and hang up in the same breath; the answer is already read when
# the connection-lost callback fires, but aioimaplib needs a few loop turns to hand it over.
_LOST_GRACE = 0.2


@dataclass(frozen=True)
class ImapSettings:
    """How to reach and log in to one account's IMAP server."""

    host: str
    port: int
    secure: bool = False  # implicit TLS (993); False: plain, upgraded with STARTTLS when offered
    require_tls: bool = False  # no login unless the connection is encrypted (see `tls_policy`)
    user: str = ""
    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)  # AUTHENTICATE XOAUTH2
    reject_unauthorized: bool = True  # False: accept any certificate (self-signed servers)
    timeout: float = 30.0  # bound on connect and on each command
    # Where connections may go (gql_mail/outbound.py); the default restricts nothing.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy, compare=False, repr=False)


async def verify_imap(settings: ImapSettings) -> None:
    """Connect, log in and LOGOUT: proves the account's IMAP settings work. Raises ``MailError``."""
    async with _session(settings):
        pass


async def find_sent_folder(settings: ImapSettings) -> str | None:
    """The mailbox carrying the RFC 6154 ``\\Sent`` special-use flag, or None if none does."""
    async with _session(settings) as session:
        return await session.find_sent_folder()


async def append_to_sent(settings: ImapSettings, raw: bytes, folder: str | None) -> str:
    """APPEND ``raw`` with ``\\Seen`` to ``folder`` (or the ``\\Sent`` mailbox); return the folder used.

    ``folder`` is a decoded mailbox name as users see it ("Sent", "Gesendete Objekte");
    it is encoded to IMAP's modified UTF-7 on the wire.
    """
    async with _session(settings) as session:
        target = folder or await session.find_sent_folder()
        if not target:
            raise MailError(
                "No Sent folder: the server marks no mailbox \\Sent and no sentMailPath is set",
                code="EPROTOCOL",
                permanent=True,
            )
        await session.append(target, raw)
        # A name the server gave is the server's text: it is stored (`copiedTo`) only once made safe.
        return target if folder else peer_text(target)


class _Session:
    """A logged-in aioimaplib client whose every command is bounded and fails fast on disconnect."""

    def __init__(self, settings: ImapSettings) -> None:
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._tls_context = _tls_context(settings) if settings.secure else None
        self.client: Any = _CheckedIMAP4(
            settings.outbound,
            host=settings.host,
            port=settings.port,
            timeout=settings.timeout,
            conn_lost_cb=self._on_connection_lost,
            ssl_context=self._tls_context,
        )

    def _on_connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    async def _run(self, awaitable: Awaitable[_T], bound: float | None = None) -> _T:
        """Await a command, but give up at once if the connection drops, and after ``bound`` seconds."""
        task = asyncio.ensure_future(awaitable)
        waiters: list[asyncio.Future[Any]] = [task, self._lost]
        try:
            async with asyncio.timeout(self._settings.timeout if bound is None else bound):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():
                    await asyncio.wait([task], timeout=_LOST_GRACE)
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        raise ConnectionResetError("IMAP connection lost")

    async def open(self) -> None:
        await self._run(self.client.wait_hello_from_server())
        if self._tls_context is None:
            if self._has_capability("STARTTLS"):
                await self._starttls()
            else:
                refusal = starttls_not_offered(self._settings.require_tls)
                if refusal is not None:
                    raise refusal
        await self._login()

    def _has_capability(self, name: str) -> bool:
        return name.upper() in {str(c).upper() for c in self.client.protocol.capabilities}

    async def _starttls(self) -> None:
        """Upgrade the plain connection in place (RFC 3501 6.2.1); aioimaplib can't do this itself."""
        protocol = self.client.protocol
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=self._loop)
        response = await self._run(protocol.execute(command))
        if response.result != "OK":  # refused: the connection is still plain
            reply = f"{response.result} {_text(response.lines)}".strip()
            refusal = starttls_refused(self._settings.host, self._settings.require_tls, reply)
            if refusal is not None:
                raise refusal
            return
        context = _tls_context(self._settings)
        transport = await asyncio.wait_for(
            self._loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=self._settings.host,
                ssl_handshake_timeout=self._settings.timeout,
            ),
            self._settings.timeout,
        )
        if transport is None:
            raise MailError("Connection closed during the TLS handshake", code="ETLS")
        protocol.transport = transport
        # Capabilities announced before TLS can't be trusted (RFC 3501 6.2.1): ask again.
        await self._run(protocol.capability())

    async def _login(self) -> None:
        settings = self._settings
        with credentials_in_use(settings.user, settings.password, settings.access_token):
            await self._authenticate()

    async def _authenticate(self) -> None:
        settings = self._settings
        if settings.access_token is not None:
            response = await self._run(self._xoauth2(settings.user, settings.access_token))
        else:
            if self._has_capability("LOGINDISABLED"):
                raise MailError(
                    "Server refuses plaintext LOGIN (LOGINDISABLED) and offers no STARTTLS",
                    code="EAUTH",
                    permanent=True,
                    auth_failure=True,
                )
            response = await self._run(self.client.login(_quote(settings.user), settings.password or ""))
        if response.result != "OK":
            raise classify_imap_login_refusal(f"{response.result} {_text(response.lines)}".strip())

    async def _xoauth2(self, user: str, token: str) -> Any:
        """AUTHENTICATE XOAUTH2 that answers the server's error challenge, so a bad token fails fast."""
        protocol = self.client.protocol
        sasl = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode("ascii")
        command = _ChallengeAnsweringCommand(
            "AUTHENTICATE", protocol.new_tag(), "XOAUTH2", sasl, loop=self._loop, protocol=protocol
        )
        response = await protocol.execute(command, scrub=token)
        if response.result == "OK":
            protocol.state = aioimaplib.AUTH
        return response

    async def logout(self) -> None:
        """LOGOUT, bounded and silent: by now the work is done or already failed."""
        try:
            state = self.client.protocol.state
            if state in (aioimaplib.NONAUTH, aioimaplib.AUTH, aioimaplib.SELECTED) and not self._lost.done():
                await self._run(self.client.protocol.logout(), min(self._settings.timeout, _LOGOUT_TIMEOUT))
        except Exception:  # noqa: S110 - LOGOUT failing changes nothing for the caller
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Drop the socket and any connect still in flight; aioimaplib has no close of its own."""
        client_task = getattr(self.client, "_client_task", None)
        if client_task is not None and not client_task.done():
            client_task.cancel()
        transport = self.client.protocol.transport
        if transport is not None:
            transport.close()
        for task in (*self.client.tasks, *self.client.protocol.tasks):
            task.cancel()

    async def find_sent_folder(self) -> str | None:
        # RFC 6154: servers MAY omit special-use flags from a plain LIST; RETURN (SPECIAL-USE) makes them
        # MUST, and every server announcing SPECIAL-USE accepts it.
        extra = ("RETURN (SPECIAL-USE)",) if self._has_capability("SPECIAL-USE") else ()
        response = await self._run(self.client.protocol.simple_command("LIST", '""', '"*"', *extra))
        if response.result != "OK":
            raise MailError(f"LIST failed: {_text(response.lines)}", code="EPROTOCOL")
        for flags, name in _parse_list(response.lines):
            if "\\sent" in flags:
                return name
        return None

    async def append(self, folder: str, raw: bytes) -> None:
        mailbox = _quote(encode_mailbox(folder))
        response = await self._run(self.client.append(_crlf(raw), mailbox=mailbox, flags="(\\Seen)"))
        if response.result != "OK":
            text = _text(response.lines)
            # TRYCREATE: the folder doesn't exist; retrying the same append can't help.
            missing = "TRYCREATE" in text.upper() or "NONEXISTENT" in text.upper()
            raise MailError(
                f"APPEND to {folder!r} failed: {response.result} {text}",
                code="EPROTOCOL",
                permanent=missing,
                response=f"{response.result} {text}",
            )


@asynccontextmanager
async def _session(settings: ImapSettings) -> AsyncIterator[_Session]:
    """A logged-in session that always ends with LOGOUT and a closed socket; errors as ``MailError``."""
    try:
        session = _Session(settings)
    except Exception as exc:
        raise classify_imap_exception(exc) from exc
    try:
        try:
            await session.open()
        except MailError:
            raise
        except Exception as exc:
            raise classify_imap_exception(exc) from exc
        try:
            yield session
        except MailError:
            raise
        except Exception as exc:
            raise classify_imap_exception(exc) from exc
    finally:
        await session.logout()


class _GreetingProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, but a greeting that is neither OK nor PREAUTH ends the wait for it at once.

    aioimaplib raises such a greeting in a task nobody awaits: the client then waits out its timeout and the
    whole banner lands in the log. The peer may be any service (SSH, an admin port), so what it said is
    kept only as a short excerpt (``peer_excerpt``), for ``_CheckedIMAP4.wait_hello_from_server``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: Any) -> None:
        super().__init__(loop, conn_lost_cb)
        self.refused_greeting: asyncio.Future[MailError] = loop.create_future()

    async def welcome(self, command: bytes) -> None:
        if b"PREAUTH" in command or b"OK" in command:  # aioimaplib's own test of a greeting
            await super().welcome(command)
        elif self.refused_greeting.done():
            return
        elif command.startswith(b"* BYE"):  # an IMAP server refusing us (RFC 3501 7.1.5), as SMTP's 554
            greeting = peer_excerpt(command)
            error = MailError(
                f"Server refused the connection: {greeting}", code="ECONNECTION", response=greeting
            )
            self.refused_greeting.set_result(error)
        else:
            excerpt = peer_excerpt(command, FOREIGN_EXCERPT)
            self.refused_greeting.set_result(MailError(f"Not an IMAP greeting: {excerpt}", code="EPROTOCOL"))


class _CheckedIMAP4(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client, connected through the outbound policy: the name is resolved and checked, the
    connection goes to the checked address, and TLS still verifies the certificate against the name.
    A refusal (``OutboundRefused``) is raised where aioimaplib raises a failed connect: from
    ``wait_hello_from_server``, which also fails at once on a greeting that is no IMAP welcome."""

    def __init__(self, outbound: OutboundPolicy, **kwargs: Any) -> None:
        self._outbound = outbound  # before IMAP4.__init__, which calls create_client
        super().__init__(**kwargs)

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _GreetingProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(self._connect(local_loop, host, port, ssl_context))

    async def wait_hello_from_server(self) -> None:
        hello = asyncio.ensure_future(super().wait_hello_from_server())
        refused: asyncio.Future[MailError] = self.protocol.refused_greeting
        try:
            await asyncio.wait([hello, refused], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not hello.done():
                hello.cancel()
        if refused.done():
            raise refused.result()
        hello.result()

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> Any:
        sock = await self._outbound.connect(host, port)
        try:
            return await loop.create_connection(
                lambda: self.protocol,
                sock=sock,
                ssl=ssl_context,
                server_hostname=host if ssl_context is not None else None,
            )
        except BaseException:
            sock.close()
            raise


class _ChallengeAnsweringCommand(aioimaplib.Command):  # type: ignore[misc]
    """An AUTHENTICATE command that sends the empty line a failed SASL exchange waits for.

    On a bad token, XOAUTH2 servers send ``+ <base64 JSON error>`` and wait for the client's
    (empty) reply before the tagged NO. aioimaplib files the ``+`` line into the pending command
    and calls ``flush()``; it also calls ``flush()`` after every chunk it reads, so only answer a
    continuation line, and only once.
    """

    def __init__(self, *args: Any, protocol: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocol = protocol
        self._answered = False

    def flush(self) -> None:
        lines = self._resp_lines
        if not self._answered and lines and bytes(lines[-1]).startswith(b"+"):
            self._answered = True
            self._protocol.transport.write(b"\r\n")


def _tls_context(settings: ImapSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not settings.reject_unauthorized:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _text(lines: list[Any]) -> str:
    """A response's lines as one line of text, for error messages; the server's bytes made safe to store."""
    parts = (
        bytes(line).decode("utf-8", "surrogateescape") if isinstance(line, (bytes, bytearray)) else str(line)
        for line in lines
    )
    return peer_text(" ".join(parts))


def _quote(value: str) -> str:
    """An IMAP quoted string; aioimaplib passes command arguments through verbatim."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _crlf(raw: bytes) -> bytes:
    """IMAP literals are CRLF text; some servers reject a message with bare LFs."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\)\s+(?P<delim>NIL|"(?:[^"\\]|\\.)*")\s+(?P<name>.*)$', re.I)
_LITERAL_RE = re.compile(rb"^\{(\d+)\+?\}$")


def _parse_list(lines: list[Any]) -> list[tuple[set[str], str]]:
    """(lower-cased flags, decoded name) per LIST reply; names may be atoms, quoted or literals."""
    entries: list[tuple[set[str], str]] = []
    items = [bytes(line) for line in lines]
    index = 0
    while index < len(items):
        match = _LIST_RE.match(items[index].strip())
        index += 1
        if match is None:
            continue  # the tagged completion text, or unrelated untagged data
        flags = {flag.decode("ascii", "replace").lower() for flag in match["flags"].split()}
        name = match["name"].strip()
        if _LITERAL_RE.match(name) and index < len(items):
            name = items[index]  # aioimaplib stores the literal as the next line
            index += 1
        elif name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2:
            name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
        entries.append((flags, decode_mailbox(name.decode("utf-8", "replace"))))
    return entries


def encode_mailbox(name: str) -> str:
    """A mailbox name in IMAP modified UTF-7 (RFC 3501 5.1.3), as servers without UTF8=ACCEPT expect."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mailbox(name: str) -> str:
    """The inverse of ``encode_mailbox``; names that aren't valid modified UTF-7 come back as they are."""

    def decode(match: re.Match[str]) -> str:
        chunk = match.group(1)
        if not chunk:
            return "&"
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            return base64.b64decode(padded).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)
