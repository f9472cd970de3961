"""The outbound policy against a real running server: webhooks, SMTP and IMAP hosts that resolve into a denied
network are refused (EPOLICY) and nothing connects; the check is on the address actually connected to, at
connect time (DNS rebinding); an allow-list; IPv4-mapped IPv6; and a non-mail service's banner is not read
back through `lastError`.

The cloud metadata address itself can't be listened on here, so a loopback stand-in takes its place: the
tests deny 127.0.0.2/32 as well and run a real listener there that counts the connections it accepts. It must
count none. Names come from the test's resolver (`Dns`), passed to the server as its DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from gql_mail.config import Settings
from gql_mail.mail.errors import MailError, classify_smtp_exception
from gql_mail.mail.imap import ImapSettings, verify_imap
from gql_mail.mail.peer_text import peer_excerpt
from gql_mail.mail.smtp import SmtpSettings, verify_smtp
from gql_mail.models import Webhook, WebhookDelivery
from gql_mail.outbound import OutboundPolicy, OutboundRefused
from gql_mail.outbound_httpx import PolicyRefused, PolicyTransport
from tests.conftest import ACCOUNT, REGISTER, account_input, imap_block, smtp_block
from tests.faults.helpers import HOOK, of, simple, submit
from tests.harness import GraphQLErrors, Server, run_server, subscribe, wait_webhook
from tests.servers.imap import ImapServer
from tests.servers.smtp import SelfSignedCert, SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

STAND_IN = "127.0.0.2"
# The metadata range, and the stand-in for it.
DENY = ["169.254.0.0/16", f"{STAND_IN}/32"]
STATE_EVENTS = ("accountConnected", "authenticationError", "connectError")


class Dns:
    """The server's DNS in these tests: each name has a list of successive answers (the last one repeats),
    and every lookup is recorded."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.answers = names
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


class StandIn:
    """A real listener on the denied stand-in address; counts every connection it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@asynccontextmanager
async def stand_in(port: int = 0) -> AsyncIterator[StandIn]:
    """On `port` (0: any): a test that puts it on an allowed peer's port catches a connection that went to
    the denied address instead of the checked one."""
    listener = StandIn()
    server = await asyncio.start_server(listener._accept, STAND_IN, port)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def banner_server(banner: bytes) -> AsyncIterator[int]:
    """A TCP service on 127.0.0.1 that is no mail server: it says `banner` and waits."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def register(server: Server, data: dict[str, Any]) -> dict[str, Any]:
    """Register an account and wait for its first state event; returns that event."""
    async with subscribe(server, account=data["account"]) as sub:
        await server.gql(REGISTER, {"input": data})
        event: dict[str, Any] = await sub.wait_for(lambda e: e["event"] in STATE_EVENTS)
    return event


async def last_error(server: Server, account: str) -> dict[str, Any]:
    shown: dict[str, Any] = (await server.gql(ACCOUNT, {"account": account}))["account"]
    assert shown["lastError"] is not None, shown
    return shown


async def attempted(server: Server, url: str) -> WebhookDelivery:
    """The first delivery to the webhook at `url` once it has had an attempt (polled, bounded)."""
    async with asyncio.timeout(10):
        while True:
            async with server.runtime.db.read() as session:
                row = (
                    await session.execute(
                        select(WebhookDelivery)
                        .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
                        .where(col(Webhook.url) == url, col(WebhookDelivery.attempts_made) >= 1)
                    )
                ).scalar()
            if row is not None:
                return row
            server.runtime.wake.webhooks()
            await asyncio.sleep(0.05)


def refusal_of(reason: str | None) -> str:
    """The policy's text in a webhook attempt's reason ("<code or error class>: <text>")."""
    assert reason is not None
    return reason.split(": ", 1)[1]


@pytest.mark.fault(
    "Webhook URL pointing at cloud metadata",
    "a URL whose host is a denied address (::ffff: mapped too) is refused when given (BAD_USER_INPUT); "
    "one that resolves to one: each attempt fails with the policy's reason naming host, address and rule; "
    "a listener on the denied stand-in sees no connection; "
    "a webhook to an allowed receiver in the same run is delivered",
)
async def test_webhooks_to_denied_addresses_are_refused(
    tmp_path: Path, webhook_receiver: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    async with stand_in() as listener:
        dns = Dns(
            {
                "metadata.test": [["169.254.169.254"]],
                "internal.test": [[STAND_IN]],
                "mapped.test": [[f"::ffff:{STAND_IN}"]],
            }
        )
        refused = {
            "http://metadata.test/latest/meta-data/": "metadata.test (169.254.169.254)",
            f"http://internal.test:{listener.port}/hook": f"internal.test ({STAND_IN})",
            f"http://mapped.test:{listener.port}/hook": f"mapped.test ({STAND_IN})",
        }
        literals = [
            "http://169.254.169.254/latest/meta-data/",
            f"http://[::ffff:{STAND_IN}]:{listener.port}/h",
        ]
        async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
            for url in literals:  # an address is judged when it is given: a clear error, nothing stored
                with pytest.raises(GraphQLErrors) as caught:
                    await server.gql(HOOK, {"input": {"url": url, "events": ["accountAdded"]}})
                assert caught.value.codes == ["BAD_USER_INPUT"], caught.value
                assert "GQL_MAIL_OUTBOUND_DENY" in str(caught.value)
            for url in (*refused, webhook_receiver.url):
                await server.gql(HOOK, {"input": {"url": url, "events": ["accountAdded"]}})
            await register(server, account_input("hooked", smtp_server))

            await wait_webhook(webhook_receiver, lambda r: r.header("X-GqlMail-Event") == "accountAdded")
            for url, target in refused.items():
                delivery = await attempted(server, url)
                assert delivery.status == "pending", "a refusal is a failed attempt, retried with backoff"
                text = refusal_of(delivery.last_error)
                assert text.startswith(f"Outbound connection to {target} refused by policy: "), text
                assert "GQL_MAIL_OUTBOUND_DENY" in text
        assert listener.connections == 0, "nothing may reach a denied address"


@pytest.mark.fault(
    "SMTP and IMAP hosts resolving to cloud metadata",
    "registering an account whose SMTP or IMAP host is a denied address: BAD_USER_INPUT; one whose host "
    "resolves to a denied address: CONNECT_ERROR with "
    "lastError code EPOLICY (not an authentication error) naming the address; no connection reaches it",
)
async def test_mail_hosts_resolving_to_denied_addresses_are_refused(
    tmp_path: Path, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    async with stand_in() as listener:
        dns = Dns({"metadata.test": [["169.254.169.254"]], "internal.test": [[STAND_IN]]})
        async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
            accounts = {
                "smtp-meta": account_input("smtp-meta", smtp_server)
                | {"smtp": smtp_block(smtp_server, host="metadata.test", port=25)},
                "smtp-internal": account_input("smtp-internal", smtp_server)
                | {"smtp": smtp_block(smtp_server, host="internal.test", port=listener.port)},
                "imap-internal": account_input("imap-internal", smtp_server)
                | {"imap": imap_block(imap_server, host="internal.test", port=listener.port)},
            }
            literal = account_input("smtp-literal", smtp_server) | {
                "smtp": smtp_block(smtp_server, host="::ffff:169.254.169.254", port=25)
            }
            with pytest.raises(GraphQLErrors) as caught:  # an address is judged when it is given
                await register(server, literal)
            assert caught.value.codes == ["BAD_USER_INPUT"], caught.value
            for name, data in accounts.items():
                event = await register(server, data)
                assert event["event"] == "connectError", (name, event)
                assert event["data"]["errorCode"] == "EPOLICY", (name, event)
                shown = await last_error(server, name)
                assert shown["state"] == "CONNECT_ERROR"
                assert shown["lastError"]["code"] == "EPOLICY"
                assert "refused by policy" in shown["lastError"]["message"]
            assert "169.254.169.254" in (await last_error(server, "smtp-meta"))["lastError"]["message"]
            assert STAND_IN in (await last_error(server, "imap-internal"))["lastError"]["message"]
        assert listener.connections == 0, "nothing may reach a denied address"


@pytest.mark.fault(
    "DNS rebinding of an SMTP host",
    "a name that resolved to the real SMTP server when the account was checked resolves to a denied address "
    "when a message is sent: the send is refused (errorCode EPOLICY), one lookup per connection, and a "
    "listener on the denied address (same port) sees nothing",
)
async def test_rebinding_an_smtp_host_after_the_check_is_refused_at_send(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    async with stand_in(smtp_server.port) as listener:
        dns = Dns({"relay.test": [[smtp_server.host], [STAND_IN]]})
        async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
            data = account_input("rebound", smtp_server) | {
                "smtp": smtp_block(smtp_server, host="relay.test")
            }
            assert (await register(server, data))["event"] == "accountConnected"
            assert dns.lookups == ["relay.test"]

            async with subscribe(server, account="rebound") as sub:
                answer = await submit(server, "rebound", simple())
                event = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
            assert event["data"]["errorCode"] == "EPOLICY", event
            assert STAND_IN in event["data"]["error"]
            assert dns.lookups == ["relay.test", "relay.test"], "resolved once per connection, then checked"
        assert listener.connections == 0
        assert len(smtp_server.received) == 0, "the message went nowhere"


@pytest.mark.fault(
    "DNS rebinding of a webhook host",
    "a webhook host answers an allowed address first and a denied one after: the first POST is delivered, "
    "the next connection is refused (EPOLICY) by the check of the address it would use; the denied address "
    "(same port) sees nothing",
)
async def test_rebinding_a_webhook_host_is_refused_at_connect(
    tmp_path: Path, webhook_receiver: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    async with stand_in(webhook_receiver.port) as listener:
        dns = Dns({"hooks.test": [["127.0.0.1"], [STAND_IN]]})
        url = f"http://hooks.test:{webhook_receiver.port}/hook"
        async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
            await server.gql(HOOK, {"input": {"url": url, "events": ["accountAdded"]}})
            await register(server, account_input("first", smtp_server))
            await wait_webhook(webhook_receiver, lambda r: r.json()["account"] == "first")
            assert listener.connections == 0

            webhook_receiver.down()  # drops the kept-alive connection: the next POST connects anew
            webhook_receiver.up()
            await register(server, account_input("second", smtp_server))
            async with asyncio.timeout(10):
                while True:
                    async with server.runtime.db.read() as session:
                        rows = (
                            (
                                await session.execute(
                                    select(WebhookDelivery).order_by(col(WebhookDelivery.seq))
                                )
                            )
                            .scalars()
                            .all()
                        )
                    if len(rows) == 2 and rows[1].attempts_made >= 1:
                        break
                    server.runtime.wake.webhooks()
                    await asyncio.sleep(0.05)
            assert rows[0].status == "delivered"
            assert f"hooks.test ({STAND_IN}) refused by policy" in refusal_of(rows[1].last_error)
            assert dns.lookups == ["hooks.test", "hooks.test"]
        assert [r.json()["account"] for r in webhook_receiver.received] == ["first"]
        assert listener.connections == 0


@pytest.mark.fault(
    "Allow-list of outbound networks",
    "with GQL_MAIL_OUTBOUND_ALLOW=127.0.0.1/32: the SMTP server and webhook receiver there are used; a host "
    "elsewhere (127.0.0.2, not denied) is refused with EPOLICY 'not in GQL_MAIL_OUTBOUND_ALLOW'",
)
async def test_allow_list_admits_only_its_networks(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    async with stand_in() as listener:
        dns = Dns({"elsewhere.test": [[STAND_IN]]})
        async with run_server(
            tmp_path, resolver=dns, outbound_deny=["169.254.0.0/16"], outbound_allow=["127.0.0.1/32"]
        ) as server:
            other = f"http://elsewhere.test:{listener.port}/hook"
            for url in (webhook_receiver.url, other):
                await server.gql(HOOK, {"input": {"url": url, "events": ["accountAdded"]}})
            assert (await register(server, account_input("inside", smtp_server)))[
                "event"
            ] == "accountConnected"
            await wait_webhook(webhook_receiver, lambda r: r.json()["account"] == "inside")
            text = refusal_of((await attempted(server, other)).last_error)
            assert text.endswith(
                f"elsewhere.test ({STAND_IN}) refused by policy: not in GQL_MAIL_OUTBOUND_ALLOW"
            )

            data = account_input("outside", smtp_server) | {
                "smtp": smtp_block(smtp_server, host="elsewhere.test", port=listener.port)
            }
            assert (await register(server, data))["event"] == "connectError"
            shown = await last_error(server, "outside")
            assert shown["lastError"]["code"] == "EPOLICY"
            assert "not in GQL_MAIL_OUTBOUND_ALLOW" in shown["lastError"]["message"]
        assert listener.connections == 0


async def test_an_allowed_ipv4_mapped_address_is_connected_to_as_ipv4(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """The other half of normalising ::ffff:a.b.c.d: an allowed one works (connected over IPv4)."""
    dns = Dns({"mapped.test": [[f"::ffff:{smtp_server.host}"]]})
    async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
        data = account_input("mapped", smtp_server) | {"smtp": smtp_block(smtp_server, host="mapped.test")}
        assert (await register(server, data))["event"] == "accountConnected"


@pytest.mark.fault(
    "SMTP/IMAP host pointed at a non-mail service",
    "an account whose SMTP or IMAP port is an SSH daemon (it sends 'SSH-2.0-OpenSSH_9.6p1 Debian-3'), or a "
    "service with a long refusing greeting: lastError and the connectError event show at most a short "
    "excerpt ('Not an SMTP reply: SSH-2.0-OpenSSH…'), never the version or the whole banner",
)
async def test_a_foreign_banner_is_not_read_back(tmp_path: Path, smtp_server: SmtpServer) -> None:
    banner = "internal-admin-console build 7.3.1-rc2 " + "-" * 60 + " db-primary-07.corp port 5432"
    async with (
        banner_server(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n") as ssh_port,
        banner_server(f"554 {banner}\r\n".encode()) as greeting_port,
        run_server(tmp_path) as server,
    ):
        data = account_input("ssh", smtp_server) | {
            "smtp": smtp_block(smtp_server, host="127.0.0.1", port=ssh_port)
        }
        event = await register(server, data)
        shown = await last_error(server, "ssh")
        assert shown["lastError"] == {"message": "Not an SMTP reply: SSH-2.0-OpenSSH…", "code": "EPROTOCOL"}
        assert "9.6p1" not in str(event) and "Debian" not in str(event)

        data = account_input("imap-ssh", smtp_server) | {
            "imap": {"host": "127.0.0.1", "port": ssh_port, "auth": {"user": "u", "pass": "p"}}
        }
        event = await register(server, data)
        shown = await last_error(server, "imap-ssh")
        assert shown["lastError"] == {
            "message": "Not an IMAP greeting: SSH-2.0-OpenSSH…",
            "code": "EPROTOCOL",
        }
        assert "9.6p1" not in str(event)

        data = account_input("greeting", smtp_server) | {
            "smtp": smtp_block(smtp_server, host="127.0.0.1", port=greeting_port)
        }
        event = await register(server, data)
        message = (await last_error(server, "greeting"))["lastError"]["message"]
        assert message.startswith("Server refused the connection: 554 internal-admin-console")
        assert len(message.removeprefix("Server refused the connection: ")) <= 80, message
        assert "db-primary-07" not in message
        assert len(event["data"]["response"]) <= 80


def test_the_documented_environment_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: JSON arrays of CIDRs (pydantic-settings parses list settings from the environment as JSON)."""
    monkeypatch.setenv("GQL_MAIL_OUTBOUND_DENY", '["10.0.0.0/8", "fe80::/10"]')
    monkeypatch.setenv("GQL_MAIL_OUTBOUND_ALLOW", '["10.0.0.0/8", "192.0.2.0/24"]')
    policy = OutboundPolicy.from_settings(Settings(_env_file=None))
    ip = ipaddress.ip_address
    assert policy.refusal(ip("10.1.2.3")) == "10.0.0.0/8 is in GQL_MAIL_OUTBOUND_DENY", "deny wins"
    assert policy.refusal(ip("192.0.2.7")) is None
    assert policy.refusal(ip("198.51.100.1")) == "not in GQL_MAIL_OUTBOUND_ALLOW"
    assert policy.refusal(ip("::ffff:10.0.0.1")) == "10.0.0.0/8 is in GQL_MAIL_OUTBOUND_DENY"


def test_default_deny_covers_link_local_and_metadata() -> None:
    policy = OutboundPolicy.from_settings(Settings.model_construct())
    for address in ("169.254.169.254", "fe80::1", "0.0.0.0", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert policy.refusal(ipaddress.ip_address(address)) is not None, address
    for address in ("127.0.0.1", "192.0.2.1", "2001:db8::1"):
        assert policy.refusal(ipaddress.ip_address(address)) is None, address


def test_a_bad_network_is_named_at_start() -> None:
    with pytest.raises(ValueError, match="GQL_MAIL_OUTBOUND_ALLOW: 'not-a-cidr'"):
        OutboundPolicy.from_settings(Settings.model_construct(outbound_allow=["not-a-cidr"]))


async def test_a_name_with_some_allowed_addresses_connects_to_an_allowed_one_only() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254", "192.0.2.1", "::ffff:169.254.1.1", "192.0.2.1"]

    policy = OutboundPolicy.from_settings(Settings.model_construct(), resolver)
    assert await policy.addresses("mixed.test", 80) == [ipaddress.ip_address("192.0.2.1")]
    with pytest.raises(OutboundRefused) as refused:
        await OutboundPolicy.from_settings(Settings.model_construct()).addresses("169.254.169.254", 80)
    assert classify_smtp_exception(refused.value).code == "EPOLICY"
    assert not classify_smtp_exception(refused.value).auth_failure


def test_httpx_internals_the_policy_relies_on() -> None:
    """gql_mail/outbound_httpx.py wraps the network backend of httpx's connection pool (private API); this
    fails, naming what changed, when an httpx/httpcore release moves it."""
    transport = httpx.AsyncHTTPTransport()
    pool = getattr(transport, "_pool", None)
    assert isinstance(pool, httpcore.AsyncConnectionPool), "httpx.AsyncHTTPTransport._pool is gone"
    assert isinstance(getattr(pool, "_network_backend", None), httpcore.AsyncNetworkBackend), (
        "httpcore.AsyncConnectionPool._network_backend is gone"
    )
    policy = PolicyTransport(OutboundPolicy())
    assert type(policy._pool._network_backend).__name__ == "_PolicyBackend"
    assert issubclass(PolicyRefused, httpx.ConnectError) and PolicyRefused.code == "EPOLICY"


async def test_httpx_raises_the_refusal_as_a_connect_error_with_its_code() -> None:
    """What the webhook worker sees: an httpx.ConnectError with code EPOLICY and the request attached."""
    transport = PolicyTransport(OutboundPolicy.from_settings(Settings.model_construct()))
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post("http://169.254.169.254/latest/meta-data/", content=b"{}")
    assert getattr(refused.value, "code", None) == "EPOLICY"
    assert refused.value.request.url.host == "169.254.169.254"
    assert str(refused.value) == (
        "Outbound connection to 169.254.169.254 refused by policy: "
        "169.254.0.0/16 is in GQL_MAIL_OUTBOUND_DENY"
    )


async def test_tls_is_verified_against_the_name_not_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, self_signed_cert: SelfSignedCert
) -> None:
    """The connection goes to the checked address, the certificate is still checked against the name: the
    certificate (trusted here) is for localhost and 127.0.0.1, so "wrong.test" pointed at 127.0.0.1 must fail
    (it would pass if TLS were given the address), and "localhost" pointed there must pass."""
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed_cert.cert_path))

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    policy = OutboundPolicy(resolver=to_loopback)
    context = self_signed_cert.server_context
    for secure, smtp in (
        (True, SmtpServer(implicit_tls_context=context())),
        (False, SmtpServer(tls_context=context())),
    ):
        with smtp:
            for name in ("localhost", "wrong.test"):
                settings = SmtpSettings(
                    name, smtp.port, secure=secure, user=smtp.user, password=smtp.password, outbound=policy
                )
                if name == "localhost":
                    await verify_smtp(settings)
                    continue
                with pytest.raises(MailError) as mismatch:
                    await verify_smtp(settings)
                assert mismatch.value.code == "ETLS" and "wrong.test" in mismatch.value.message
    with ImapServer(cert=self_signed_cert) as imap:
        for name in ("localhost", "wrong.test"):
            imap_settings = ImapSettings(
                name, imap.port, user=imap.user, password=imap.password, outbound=policy
            )
            if name == "localhost":
                await verify_imap(imap_settings)
                continue
            with pytest.raises(MailError) as mismatch:
                await verify_imap(imap_settings)
            assert mismatch.value.code == "ETLS" and "wrong.test" in mismatch.value.message


async def test_a_connect_failure_names_the_real_port() -> None:
    """aiosmtplib is handed a connected socket (so it knows no port); its wording of a failed connect is
    kept, with the account's port in it rather than "None"."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MailError) as failed:
            await verify_smtp(SmtpSettings("127.0.0.1", port, timeout=5))
    finally:
        server.close()
    assert failed.value.code == "ECONNECTION"
    assert failed.value.message == f"Error connecting to 127.0.0.1 on port {port}: Unexpected EOF received"


async def test_a_periodic_check_refused_by_the_policy_is_no_blip(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """A CONNECTED account tolerates a few failed periodic checks (network blips), but not EPOLICY: its host
    now resolves where we may not go, no retry mends that, and CONNECTED would hide it."""
    dns = Dns({"relay.test": [[smtp_server.host], [STAND_IN]]})
    async with run_server(tmp_path, resolver=dns, outbound_deny=DENY) as server:
        data = account_input("checked", smtp_server) | {"smtp": smtp_block(smtp_server, host="relay.test")}
        assert (await register(server, data))["event"] == "accountConnected"
        assert server.settings.account_check_failures_before_error > 1, "else any failure would do"

        server.clock.advance(server.settings.account_check_interval_seconds)
        await server.workers.accounts.check_all()
        shown = await last_error(server, "checked")
        assert shown["state"] == "CONNECT_ERROR"
        assert shown["lastError"]["code"] == "EPOLICY"


def test_an_excerpt_is_short_clean_and_marked() -> None:
    assert peer_excerpt("SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n", 16) == "SSH-2.0-OpenSSH…"
    assert peer_excerpt(b"220 mx.example.com\x00 ESMTP\r\n") == "220 mx.example.com ESMTP"
    long = peer_excerpt("554 " + "x" * 10_000)
    assert len(long) == 80 and long.endswith("…")
    assert peer_excerpt(long) == long, "idempotent"
