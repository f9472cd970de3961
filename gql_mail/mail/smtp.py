"""Send composed messages through an account's own SMTP server.

The lower-level aiosmtplib ``SMTP`` object is driven command by command (MAIL, RCPT per recipient,
DATA) rather than through ``sendmail`` so that each recipient's answer is known: a message with
one bad address among ten still goes to the nine, and the caller learns which one bounced.
A connection stays logged in across messages of one account; after any error it is marked
unusable, because a half-finished transaction or a timed-out read leaves the session in an
unknown state and a fresh connection is cheaper than reasoning about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import parse_address

from gql_mail.log_redaction import credentials_in_use
from gql_mail.mail.errors import MailError, classify_smtp_exception, reply_text
from gql_mail.mail.peer_text import peer_text
from gql_mail.mail.tls_policy import starttls_not_offered, starttls_refused
from gql_mail.malloc_tuning import release_after
from gql_mail.outbound import OutboundPolicy

__all__ = ["SendResult", "SmtpConnection", "SmtpSettings", "verify_smtp"]

# QUIT is a courtesy; a server that doesn't answer it quickly must not hold a worker.
_QUIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach and log in to one account's SMTP server."""

    host: str
    port: int
    secure: bool = False  # implicit TLS (465); False: plain, upgraded with STARTTLS when offered
    require_tls: bool = False  # no login unless the connection is encrypted (see `tls_policy`)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)  # XOAUTH2 instead of a password
    reject_unauthorized: bool = True  # False: accept any certificate (self-signed servers)
    timeout: float = 30.0  # bound on connect and on each command's reply
    local_hostname: str | None = None  # EHLO name; None: this host's FQDN
    # Where connections may go (gql_mail/outbound.py); the default restricts nothing.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy, compare=False, repr=False)


@dataclass(frozen=True)
class SendResult:
    """What the server said about one accepted message."""

    response: str  # final reply to DATA, one line: "250 2.0.0 Ok: queued as ABC" (through `peer_text`)
    accepted: tuple[str, ...]  # recipients accepted at RCPT
    rejected: dict[str, tuple[int, str]]  # recipient -> (code, message) refused at RCPT (`peer_text`)


class SmtpConnection:
    """One logged-in connection, reused for several messages of one account (async context manager)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None
        self._usable = False
        # The reply awaited now must arrive by this loop time (None: none awaited); see `_reply`.
        self._deadline: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False

    @property
    def usable(self) -> bool:
        """False once anything went wrong (or the server hung up): open a new connection."""
        return self._usable and self._client is not None and self._client.is_connected

    async def __aenter__(self) -> SmtpConnection:
        settings = self._settings
        try:
            client = aiosmtplib.SMTP(
                hostname=settings.host,
                port=settings.port,
                use_tls=settings.secure,
                # Never aiosmtplib's own: `_starttls` decides what a missing or refused STARTTLS means.
                start_tls=False,
                validate_certs=settings.reject_unauthorized,
                timeout=settings.timeout,
                local_hostname=settings.local_hostname,
            )
        except ValueError as exc:  # e.g. an invalid local_hostname: configuration, not network
            raise MailError(f"Invalid SMTP settings: {exc}", code="EPROTOCOL", permanent=True) from exc
        self._client = client
        try:
            await _connect(client, settings)
            await self._ehlo(client)
            await self._starttls(client)
            await self._authenticate(client)
        except BaseException as exc:
            client.close()
            self._client = None
            if isinstance(exc, MailError) or not isinstance(exc, Exception):
                raise
            raise classify_smtp_exception(exc) from exc
        self._usable = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client, self._usable = self._client, None, False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if client is None:
            return
        try:
            if client.is_connected:
                await client.quit(timeout=min(self._settings.timeout, _QUIT_TIMEOUT))
        except Exception:  # noqa: S110 - QUIT failing changes nothing for the caller
            pass
        finally:
            client.close()

    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> SendResult:
        """Send ``raw`` (RFC 5322 bytes, CRLF) to ``recipients``; raise ``MailError`` on failure.

        Recipients refused at RCPT are reported in ``SendResult.rejected`` while the message goes to
        the rest; if every recipient is refused, ``MailError(code="EENVELOPE")`` is raised,
        permanent only if every refusal was.
        """
        client = self._client
        if client is None or not self.usable:
            raise MailError("SMTP connection is not open", code="ECONNECTION")
        try:
            return await self._send(client, envelope_from, list(recipients), raw)
        except BaseException as exc:
            self._usable = False
            if self._timed_out:  # the watchdog closed the connection under the command
                raise MailError("Timed out waiting for server response", code="ETIMEDOUT") from exc
            if not isinstance(exc, Exception):
                client.close()  # cancelled mid-transaction: the session state is unknown
                raise
            if isinstance(exc, MailError):
                raise
            raise classify_smtp_exception(exc) from exc
        finally:
            # DATA's copies of a big message (aiosmtplib's line-ending and dot-stuffing passes) are freed
            # by now, and the caller's soon after: see malloc_tuning.
            release_after(len(raw))

    async def _ehlo(self, client: aiosmtplib.SMTP) -> None:
        """EHLO (again after STARTTLS, which discards what the server said before), HELO as fallback."""
        if not client.is_ehlo_or_helo_needed:
            return
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()

    async def _starttls(self, client: aiosmtplib.SMTP) -> None:
        """Upgrade a plain connection before any credential is sent; what may go on in clear is
        `tls_policy`'s decision."""
        settings = self._settings
        if settings.secure:
            return
        if not client.supports_extension("starttls"):
            refusal = starttls_not_offered(settings.require_tls)
            if refusal is not None:
                raise refusal
            return
        try:
            await client.starttls()
        except aiosmtplib.SMTPResponseException as exc:  # refused: the connection is still plain
            refusal = starttls_refused(settings.host, settings.require_tls, reply_text(exc.code, exc.message))
            if refusal is not None:
                raise refusal from exc
            return
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise MailError("Connection closed during the TLS handshake", code="ETLS") from exc
        await self._ehlo(client)  # what the server said before TLS is forgotten (RFC 3207 4.2)

    async def _authenticate(self, client: aiosmtplib.SMTP) -> None:
        settings = self._settings
        with credentials_in_use(settings.user, settings.password, settings.access_token):
            await self._login(client)

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        settings = self._settings
        if settings.access_token is None and settings.user is None:
            return  # an open relay / IP-authorised submission server
        if not client.supports_extension("auth"):
            # Sending unauthenticated would either fail at MAIL or, worse, relay without the
            # account's identity; the account configuration is wrong either way.
            raise MailError(
                "Server offers no authentication (AUTH) but credentials are configured",
                code="EAUTH",
                permanent=True,
                auth_failure=True,
            )
        if settings.access_token is not None:
            if "xoauth2" not in client.server_auth_methods:
                raise MailError(
                    "Server does not offer XOAUTH2 authentication",
                    code="EAUTH",
                    permanent=True,
                    auth_failure=True,
                )
            await client.auth_xoauth2(settings.user or "", settings.access_token)
            return
        if not client.supported_auth_methods:
            offered = " ".join(client.server_auth_methods).upper()
            raise MailError(
                f"No supported authentication mechanism (server offers: {offered})",
                code="EAUTH",
                permanent=True,
                auth_failure=True,
            )
        await client.login(settings.user or "", settings.password or "")

    async def _send(
        self, client: aiosmtplib.SMTP, envelope_from: str, recipients: list[str], raw: bytes
    ) -> SendResult:
        if not recipients:
            raise MailError("No recipients", code="EENVELOPE", permanent=True)
        _check_address(envelope_from, allow_empty=True)  # "" is the null reverse-path <>
        for recipient in recipients:
            _check_address(recipient, allow_empty=False)

        options, encoding = _mail_options(client, envelope_from, recipients, raw)
        # MAIL and RCPT through `execute_command`, not `mail()`/`rcpt()`: those parse every address again
        # with email.utils (40 % of sending a small message), and `_check_address` has already made sure
        # each one is a bare mailbox, so `<address>` is exactly what they would send.
        response = await self._reply(
            client.execute_command(
                b"MAIL", b"FROM:<" + envelope_from.encode(encoding) + b">", *options, timeout=None
            )
        )
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, envelope_from)

        accepted: list[str] = []
        rejected: dict[str, tuple[int, str]] = {}
        refusals: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            response = await self._reply(
                client.execute_command(b"RCPT", b"TO:<" + recipient.encode(encoding) + b">", timeout=None)
            )
            if response.code in (SMTPStatus.completed, SMTPStatus.will_forward):
                accepted.append(recipient)
            else:
                refusals.append(aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient))
                rejected[recipient] = (response.code, peer_text(response.message))
        if not accepted:
            raise aiosmtplib.SMTPRecipientsRefused(refusals)

        # aiosmtplib's own timeout off: `_reply` bounds both replies (354, then the verdict).
        response = await self._reply(client.data(raw, timeout=None), replies=2)
        return SendResult(
            response=reply_text(response.code, response.message),
            accepted=tuple(accepted),
            rejected=rejected,
        )

    async def _reply(
        self, command: Awaitable[aiosmtplib.SMTPResponse], replies: int = 1
    ) -> aiosmtplib.SMTPResponse:
        """Await a command's reply, at most `timeout` per reply.

        A deadline and one watchdog timer per connection, not a timer per command: aiosmtplib's own
        `wait_for` passes every reply through an extra callback, one more turn of the event loop before the
        sender wakes (4 per message, each waiting behind whatever else the loop has to do), and even
        `asyncio.timeout` arms and cancels a timer per command. The watchdog fires at most once per
        `timeout`; when a reply is late it closes the connection, which fails the awaited reply, and the
        send ends in ETIMEDOUT. A reply still on its way cannot be mistaken for the next command's."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._settings.timeout * replies
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._check_deadline)
        try:
            return await command
        finally:
            self._deadline = None

    def _check_deadline(self) -> None:
        self._watchdog = None
        deadline, client = self._deadline, self._client
        if deadline is None or client is None:
            return  # nothing awaited: the next command arms the watchdog again
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
            return
        self._timed_out = True
        client.close()


async def _connect(client: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    """Open the connection through the outbound policy: the name is resolved and checked here and aiosmtplib
    is given the socket, connected to the checked address (it keeps the name for TLS: SNI and certificate
    verification). Failures are worded as aiosmtplib words its own."""
    host, port = settings.host, settings.port
    try:
        async with asyncio.timeout(settings.timeout):
            sock = await settings.outbound.connect(host, port)
    except TimeoutError as exc:
        raise aiosmtplib.SMTPConnectTimeoutError(f"Timed out connecting to {host} on port {port}") from exc
    except OSError as exc:
        raise aiosmtplib.SMTPConnectError(f"Error connecting to {host} on port {port}: {exc}") from exc
    try:
        await client.connect(sock=sock, port=None)
    except BaseException as exc:
        sock.close()
        cause = exc.__cause__
        if type(exc) is aiosmtplib.SMTPConnectError:  # not its timeout or refusing-greeting subclasses
            # aiosmtplib names the port it was given, None with a socket: name the real one.
            detail = (str(cause) or type(cause).__name__) if cause is not None else str(exc)
            raise aiosmtplib.SMTPConnectError(f"Error connecting to {host} on port {port}: {detail}") from (
                cause or exc
            )
        raise


def _check_address(address: str, *, allow_empty: bool) -> None:
    """Envelope addresses must be bare mailboxes.

    aiosmtplib extracts an address from whatever it is given ("Name <a@b>", "a@b> NOTIFY=NEVER"
    both become "a@b") and refuses only what would break the command line, so anything it would
    rewrite is refused here: the envelope is never guessed from a malformed input.
    """
    if not address and allow_empty:
        return
    if not _is_bare_mailbox(address):
        raise MailError(f"Invalid envelope address: {address!r}", code="EENVELOPE", permanent=True)


@lru_cache(maxsize=4096)
def _is_bare_mailbox(address: str) -> bool:
    """Cached: an account sends to the same few addresses again and again, and parsing is not cheap."""
    try:
        return bool(address) and parse_address(address) == address
    except ValueError:  # characters that cannot go on a command line
        return False


def _mail_options(
    client: aiosmtplib.SMTP, envelope_from: str, recipients: list[str], raw: bytes
) -> tuple[list[bytes], str]:
    """MAIL FROM parameters and the address encoding: SMTPUTF8 only when the message needs it.

    SMTPUTF8 is needed for non-ASCII addresses or raw UTF-8 headers (compose emits 7-bit headers
    unless it chose SMTPUTF8); asking for it otherwise would make servers without the extension
    refuse mail they could carry.
    """
    utf8_addresses = not envelope_from.isascii() or not all(r.isascii() for r in recipients)
    utf8_headers = not _header_block(raw).isascii()
    options: list[bytes] = []
    if client.supports_extension("size"):
        options.append(b"SIZE=%d" % len(raw))
    if utf8_addresses or utf8_headers:
        if not client.supports_extension("smtputf8"):
            raise MailError(
                "The message needs SMTPUTF8 (non-ASCII "
                + ("addresses" if utf8_addresses else "headers")
                + ") but the server does not offer it",
                code="EENVELOPE" if utf8_addresses else "EMESSAGE",
                permanent=True,
            )
        options.append(b"SMTPUTF8")
    if client.supports_extension("8bitmime") and not raw.isascii():
        options.append(b"BODY=8BITMIME")
    return options, "utf-8" if utf8_addresses else "ascii"


def _header_block(raw: bytes) -> bytes:
    """The header section of an RFC 5322 message (everything before the first empty line)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end != -1:
            return raw[:end]
    return raw


async def verify_smtp(settings: SmtpSettings) -> None:
    """Connect, log in and QUIT: proves the account's SMTP settings work. Raises ``MailError``."""
    async with SmtpConnection(settings):
        pass
