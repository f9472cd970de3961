"""A real, scriptable SMTP server for tests (aiosmtpd in its own thread), plus small network helpers.

The server runs on its own event loop in a thread so it keeps answering whatever the test's loop
is doing (a test blocked in a subprocess call, a CLI run, a sync HTTP client). Tests script it
between steps without restarting it (``fail_next``, ``reject_recipients``, ``set_password``,
``delay_data``, ``close_in_data``, ``set_greeting``, ``set_accept_reply``, ``set_auth_refusal``) and wait
for deliveries with ``await wait_for_messages(n)``, which sleeps on an event the server thread sets, never
on a polling loop.

Reply texts may be ``bytes``: they go on the wire exactly as given, UTF-8 or not, as a server answering in
Latin-1 does (``b"250 2.0.0 Message accept\xe9 \xe0 la livraison"``). Inside, such a text is kept as the
``surrogateescape``'d str that stands for those bytes (aiosmtpd's handlers return str), and
``_ConnectionSMTP.push`` turns it back into them.

Also here: ``closed_port()``, ``silent_server()`` (accepts TCP, never says a word) and
``SelfSignedCert`` for STARTTLS/implicit-TLS tests.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import itertools
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.recording import RecordLog

Stage = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # the message as received (dot-unstuffed, CRLF)
    received_at: float  # time.monotonic() when DATA completed
    auth_user: str | None  # who logged in on that connection (None: nobody)
    mail_options: tuple[str, ...]  # MAIL FROM parameters, e.g. ("SIZE=123", "SMTPUTF8")
    connection_id: int  # 1, 2, ... per TCP connection since the last reset()
    tls: bool  # the connection was encrypted (implicit TLS or STARTTLS)


@dataclass
class _Script:
    """What the server will do next; guarded by SmtpServer._lock."""

    failures: dict[Stage, list[tuple[int, str]]] = field(
        default_factory=lambda: {"MAIL": [], "RCPT": [], "DATA": []}
    )
    rejections: dict[str, tuple[int, str]] = field(default_factory=dict)
    data_delay: float = 0.0
    drops_in_data: int = 0
    greeting: str | None = None  # the whole 220 line; None: aiosmtpd's
    accept_reply: str | None = None  # the whole reply to an accepted DATA; None: Postfix's wording
    auth_refusal: str | None = None  # the whole reply to refused credentials; None: aiosmtpd's 535


def _wire(text: str | bytes) -> str:
    """A reply text as the server keeps it: bytes (perhaps not UTF-8) as the surrogateescape'd str that
    `_ConnectionSMTP.push` sends as exactly those bytes."""
    return text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text


class _QuietSession(Session):
    """aiosmtpd sets the deprecated ``login_data`` itself on every AUTH and then logs a warning."""

    login_data: Any = None


class _ConnectionSMTP(SMTP):
    """aiosmtpd's SMTP protocol, numbered per connection so tests can see connection reuse, with the
    greeting scripted and replies sent as the bytes they stand for (see `_wire`)."""

    connection_id: int = 0
    greeting: str | None = None  # replaces aiosmtpd's greeting, the first thing pushed
    _greeted: bool = False
    owner: SmtpServer | None = None

    def connection_lost(self, error: Exception | None) -> None:
        if self.owner is not None:
            self.owner._connection_closed()
        super().connection_lost(error)

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    async def push(self, status: str | bytes) -> None:
        if not self._greeted:
            self._greeted = True
            status = self.greeting if self.greeting is not None else status
        # aiosmtpd encodes a str strictly (ASCII without SMTPUTF8); a scripted reply may stand for any bytes.
        await super().push(status.encode("utf-8", "surrogateescape") if isinstance(status, str) else status)


class _Handler:
    """aiosmtpd's handler: forwards to the SmtpServer (aiosmtpd inspects every attribute of a handler,
    so the server's properties stay off it)."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._owner._xoauth2(server, args)

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return await self._owner._on_mail(server, session, envelope, address, options)

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return await self._owner._on_rcpt(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        return await self._owner._on_data(server, session, envelope)


class _Controller(Controller):
    """A Controller listening on a socket bound before start, so port 0 works without a race."""

    def __init__(self, owner: SmtpServer, sock: socket.socket, **kwargs: Any) -> None:
        self._owner = owner
        self._sock = sock
        host, port = sock.getsockname()[:2]
        super().__init__(_Handler(owner), hostname=host, port=port, **kwargs)

    def factory(self) -> SMTP:
        smtp = _ConnectionSMTP(self.handler, **self.SMTP_kwargs)
        smtp.connection_id, smtp.greeting = self._owner._new_connection()
        smtp.owner = self._owner
        return smtp

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpServer:
    """A scriptable aiosmtpd server on 127.0.0.1 recording what it receives.

    Reply to an accepted DATA: ``250 2.0.0 Ok: queued as <QUEUEID>`` (Postfix's wording), so tests
    can check the server's reply is carried through unchanged.
    """

    def __init__(
        self,
        *,
        user: str = "smtpuser",
        password: str = "smtppass",
        access_token: str = "valid-token",
        auth: bool = True,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """``tls_context`` offers STARTTLS; ``implicit_tls_context`` makes it a TLS-from-the-start
        (port 465 style) server; ``auth=False`` offers no AUTH (until STARTTLS, if it has a context)."""
        self.host = host
        self.port = 0
        self._defaults = (user, password, access_token)
        self._user, self._password, self._access_token = self._defaults
        self._auth = auth
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._implicit_tls_context = implicit_tls_context
        self._lock = threading.Lock()
        self._script = _Script()
        self._connection_count = 0
        self._open_connections = 0
        self._most_open = 0
        self._queue_ids = itertools.count(1)
        self._controller: _Controller | None = None
        self.received: RecordLog[ReceivedMessage] = RecordLog()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP
        # (a plain socket() has proto 0), and without it Nagle + delayed ACK add 40 ms per reply.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        kwargs: dict[str, Any] = {
            "server_hostname": "smtp.test",
            "tls_context": self._tls_context,
            "require_starttls": self._require_starttls,
            "auth_require_tls": False,
            "ready_timeout": 5.0,
            "ssl_context": self._implicit_tls_context,
        }
        if self._auth:
            kwargs["authenticator"] = self._authenticate
        else:
            # aiosmtpd then offers AUTH only after TLS; with no TLS, never (a relay without AUTH).
            kwargs["auth_require_tls"] = True
        self._controller = _Controller(self, sock, **kwargs)
        self._controller.start()
        self.reset()  # forget the controller's own start-up probe connection
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting (call from the test, any time) ----------------------------------------------------

    def reset(self) -> None:
        """Back to a plain accepting server with the default credentials; recorded messages cleared."""
        with self._lock:
            self._script = _Script()
            self._connection_count = 0
            self._most_open = self._open_connections
            self._user, self._password, self._access_token = self._defaults
        self.received.clear()

    def fail_next(
        self,
        n: int = 1,
        *,
        code: int = 451,
        message: str | bytes = "4.3.0 Try again later",
        stage: Stage = "DATA",
    ) -> None:
        """The next ``n`` answers at ``stage`` (DATA, RCPT per recipient, or MAIL) are ``code message``."""
        with self._lock:
            self._script.failures[stage].extend([(code, _wire(message))] * n)

    def reject_recipients(self, rejections: Mapping[str, tuple[int, str | bytes]]) -> None:
        """Refuse these recipients at RCPT with (code, message) until reset()."""
        with self._lock:
            self._script.rejections.update({k.lower(): (c, _wire(m)) for k, (c, m) in rejections.items()})

    def set_greeting(self, reply: str | bytes | None) -> None:
        """New connections are greeted with this whole line (``b"220 smtp.test pr\xeat"``, or a refusing
        ``554 ...``) until reset(); None: aiosmtpd's own."""
        with self._lock:
            self._script.greeting = None if reply is None else _wire(reply)

    def set_accept_reply(self, reply: str | bytes | None) -> None:
        """An accepted DATA is answered with this whole line until reset(); None: ``250 2.0.0 Ok: queued as
        <QUEUEID>``."""
        with self._lock:
            self._script.accept_reply = None if reply is None else _wire(reply)

    def set_auth_refusal(self, reply: str | bytes | None) -> None:
        """Refused credentials (LOGIN/PLAIN) are answered with this whole line until reset(); None:
        aiosmtpd's ``535 5.7.8 Authentication credentials invalid``."""
        with self._lock:
            self._script.auth_refusal = None if reply is None else _wire(reply)

    def set_password(self, password: str) -> None:
        with self._lock:
            self._password = password

    def set_credentials(self, user: str, password: str) -> None:
        with self._lock:
            self._user, self._password = user, password

    def set_access_token(self, token: str) -> None:
        """The bearer token XOAUTH2 accepts."""
        with self._lock:
            self._access_token = token

    def delay_data(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each DATA (a slow sink) until reset()."""
        with self._lock:
            self._script.data_delay = seconds

    def close_in_data(self, n: int = 1) -> None:
        """For the next ``n`` messages, drop the connection after the data arrives, before any reply."""
        with self._lock:
            self._script.drops_in_data += n

    # -- observing -----------------------------------------------------------------------------------

    @property
    def user(self) -> str:
        return self._user

    @property
    def password(self) -> str:
        return self._password

    @property
    def access_token(self) -> str:
        return self._access_token

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.received.snapshot()

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since the last reset()."""
        with self._lock:
            return self._connection_count

    @property
    def most_open_at_once(self) -> int:
        """The most TCP connections open at the same time since the last reset()."""
        with self._lock:
            return self._most_open

    async def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:  # noqa: ASYNC109
        """All messages received so far, once there are at least ``n``; ``TimeoutError`` otherwise."""
        return await self.received.wait_for(n, timeout, "messages")

    # -- server side (runs on the server's thread) ---------------------------------------------------

    def _new_connection(self) -> tuple[int, str | None]:
        """The new connection's number and greeting."""
        with self._lock:
            self._connection_count += 1
            self._open_connections += 1
            self._most_open = max(self._most_open, self._open_connections)
            return self._connection_count, self._script.greeting

    def _connection_closed(self) -> None:
        with self._lock:
            self._open_connections -= 1

    def _take_failure(self, stage: Stage) -> tuple[int, str] | None:
        with self._lock:
            pending = self._script.failures[stage]
            return pending.pop(0) if pending else None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self._lock:
            expected = (self._user.encode(), self._password.encode())
            refusal = self._script.auth_refusal
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == expected:
            return AuthResult(success=True, auth_data=auth_data.login.decode())
        return AuthResult(success=False, handled=False, message=refusal)

    async def _xoauth2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2 as Gmail does it: on a bad token, a 334 JSON challenge, then 535 after the empty reply."""
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            user = fields[0].removeprefix("user=")
            token = next(f for f in fields if f.startswith("auth=")).removeprefix("auth=Bearer ")
        except (IndexError, ValueError, StopIteration):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad XOAUTH2 argument")
        with self._lock:
            ok = user == self._user and token == self._access_token
        if ok:
            return AuthResult(success=True, auth_data=user)
        await server.challenge_auth(b'{"status":"401","schemes":"bearer","scope":"mail"}')
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def _on_mail(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        failure = self._take_failure("MAIL")
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def _on_rcpt(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        failure = self._take_failure("RCPT")
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        with self._lock:
            rejection = self._script.rejections.get(address.lower())
        if rejection is not None:
            return f"{rejection[0]} {rejection[1]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def _on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            delay = self._script.data_delay
            drop = self._script.drops_in_data > 0
            if drop:
                self._script.drops_in_data -= 1
        if drop:
            transport = server.transport
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            # connection_lost() cancels this handler; waiting here keeps aiosmtpd from replying.
            await asyncio.Event().wait()
        if delay:
            await asyncio.sleep(delay)  # the server simulating a slow sink, not a test waiting
        failure = self._take_failure("DATA")
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        assert envelope.mail_from is not None and isinstance(envelope.content, bytes)
        with self._lock:
            accept_reply = self._script.accept_reply
        auth_data = session.auth_data
        self.received.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.content,
                received_at=time.monotonic(),
                auth_user=auth_data if isinstance(auth_data, str) else None,
                mail_options=tuple(envelope.mail_options),
                connection_id=getattr(server, "connection_id", 0),
                tls=session.ssl is not None or self._implicit_tls_context is not None,
            )
        )
        return accept_reply or f"250 2.0.0 Ok: queued as Q{next(self._queue_ids):06d}"


# -- network helpers ---------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, so connecting is refused at once (CONNECT_ERROR tests)."""
    return free_port(host)


@asynccontextmanager
async def silent_server(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A TCP server on the running loop that accepts connections and never writes (timeout tests)."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, host, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


@dataclass(frozen=True)
class SelfSignedCert:
    """A throwaway certificate for ``localhost``/127.0.0.1, written to ``cert_path``/``key_path``."""

    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path, common_name: str = "localhost") -> SelfSignedCert:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "cert.pem", directory / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cls(cert_path, key_path)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context
