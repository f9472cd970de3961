"""An outcome the database refuses fails neither its batch nor its own message's state.

No real server can produce such an outcome any more (replies are made safe where they enter, see
tests/mail/test_peer_text.py), so these tests build one on purpose: a reply holding a lone surrogate, as
aiosmtplib made of a Latin-1 byte before, handed to the recorder the way the delivery worker hands every
outcome over. The 49 others are recorded; the poisoned one ends `failed` (INTERNAL) with its messageFailed
event instead of staying `sending`, to be sent again each time its lease lapsed.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import select
from sqlmodel import col

from gql_mail.mail.errors import MailError
from gql_mail.mail.smtp import SendResult
from gql_mail.models import DeliveryAttempt, OutboxMessage, WebhookDelivery
from gql_mail.queue import claim_messages, claim_webhook_deliveries
from gql_mail.services.accounts import record_account_state
from gql_mail.services.delivery import Outcome
from gql_mail.workers.delivery import DeliveryWorker
from gql_mail.workers.webhook_dispatch import WebhookDispatcher
from tests.conftest import account_input, register_connected
from tests.faults.helpers import HOOK, message, of, simple, submit
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

POISON = "250 2.0.0 Message accept\udce9 \udce0 la livraison"  # aiosmtplib's decoding of Latin-1 bytes
UNSENT = 5  # of the 50, this many met a transient 451 (the other shape of update in the same batch)


async def test_one_poisoned_outcome_in_a_batch_of_50(
    server: Server, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A webhook, so each event is also serialised into a webhook_delivery row in the same transaction.
    await server.gql(HOOK, {"input": {"url": "http://127.0.0.1:9/never-posted"}})
    await register_connected(server, account_input("first", smtp_server))
    await register_connected(server, account_input("second", smtp_server))
    server.workers.scheduler.pause()  # the messages are claimed and recorded here, by hand
    worker = DeliveryWorker(server.runtime)
    worker.start()
    try:
        for n in range(50):
            await submit(server, ("first", "second")[n % 2], simple(f"to{n}@example.org"))
        claimed = await claim_messages(server.runtime, 50)
        assert len(claimed) == 50
        poisoned, unsent = claimed[17], claimed[:UNSENT]
        transient = MailError("Message failed: 451 4.3.0 Try again later", code="EMESSAGE", smtp_code=451)
        async with subscribe(server) as sub:
            with caplog.at_level(logging.WARNING, logger="gql_mail.workers.batcher"):
                # Handed over without a pause between them, as a busy worker does: one batch of 50.
                futures = [
                    worker._record_later(
                        Outcome(m, error=transient)
                        if m in unsent
                        else Outcome(
                            m,
                            result=SendResult(
                                response=POISON if m is poisoned else "250 2.0.0 Ok",
                                accepted=m.envelope_to,
                                rejected={},
                            ),
                        ),
                    )
                    for m in claimed
                ]
                await worker.idle()
            failed = await sub.wait_for(of("messageFailed", poisoned.id))
            await sub.wait_count(of("messageSent"), 50 - UNSENT - 1)
            await sub.wait_count(of("messageDeliveryError"), UNSENT)
    finally:
        await worker.stop()
        server.workers.scheduler.resume()

    assert [f.exception() for f in futures] == [None] * 50, "every outcome was written or ended"
    assert "batched write of 50 items failed" in caplog.text, "they were one batch, and it failed"
    assert failed["data"] == {
        "messageId": poisoned.message_id,
        "queueId": poisoned.id,
        "error": failed["data"]["error"],
        "errorCode": "INTERNAL",
        "smtpResponseCode": None,
    }
    assert "could not be recorded" in failed["data"]["error"]
    assert [e["event"] for e in sub.events if e["data"].get("queueId") == poisoned.id] == ["messageFailed"]

    async with server.runtime.db.read() as session:
        rows = (
            await session.execute(
                select(OutboxMessage).where(col(OutboxMessage.id).in_([m.id for m in claimed]))
            )
        ).scalars()
        by_id = {row.id: row for row in rows}
        attempts = (
            (
                await session.execute(
                    select(DeliveryAttempt).where(col(DeliveryAttempt.outbox_id) == poisoned.id)
                )
            )
            .scalars()
            .all()
        )
    statuses = {m.id: by_id[m.id].status for m in claimed}
    assert sorted(statuses.values()) == sorted(
        ["sent"] * (50 - UNSENT - 1) + ["queued"] * UNSENT + ["failed"]
    )
    assert statuses[poisoned.id] == "failed" and all(statuses[m.id] == "queued" for m in unsent)
    assert all(row.attempts_made == 1 and row.claimed_by is None for row in by_id.values())
    ended = by_id[poisoned.id]
    assert (ended.last_error_code, ended.last_smtp_code, ended.response, ended.raw) == (
        "INTERNAL",
        None,
        None,
        b"",
    )
    assert ended.last_error_message == failed["data"]["error"]
    assert [(a.attempt, a.ok, a.error_code) for a in attempts] == [(1, False, "INTERNAL")]

    shown = await message(server, poisoned.id)
    assert (shown["status"], shown["attemptsMade"], shown["lastError"]["code"]) == ("failed", 1, "INTERNAL")
    # Once every retry time has passed, the 451 ones are sent, once each; the poisoned one never again.
    server.advance(24 * 3600)
    await server.drain()
    received = await smtp_server.wait_for_messages(UNSENT)
    assert sorted(r.rcpt_tos for r in received) == sorted(m.envelope_to for m in unsent)
    assert (await message(server, poisoned.id))["status"] == "failed"


async def test_a_webhook_result_that_cannot_be_recorded_ends_failed(
    server: Server, smtp_server: SmtpServer
) -> None:
    await server.gql(HOOK, {"input": {"url": "http://127.0.0.1:9/never-posted"}})
    server.workers.scheduler.pause()  # the deliveries are claimed and recorded here, by hand
    dispatcher = WebhookDispatcher(server.runtime)
    dispatcher.start()
    try:
        # Two accounts: two accountAdded deliveries that are first in line, so both are claimed.
        await register_connected(server, account_input("one", smtp_server))
        await register_connected(server, account_input("two", smtp_server))
        poisoned, fine = (await claim_webhook_deliveries(server.runtime, 10))[:2]
        # As the dispatcher hands results over after its POSTs: both in one batch.
        await asyncio.gather(
            dispatcher._recorder.add((poisoned, "HTTP 500 r\udce9ponse")),
            dispatcher._recorder.add((fine, None)),
        )
    finally:
        await dispatcher.stop()
        server.workers.scheduler.resume()
    async with server.runtime.db.read() as session:
        rows = {
            row.seq: row
            for row in (
                await session.execute(
                    select(WebhookDelivery).where(col(WebhookDelivery.seq).in_([poisoned.seq, fine.seq]))
                )
            ).scalars()
        }
    ended = rows[poisoned.seq]
    assert (ended.status, ended.attempts_made, ended.claimed_by) == ("failed", 1, None)
    assert ended.last_error is not None and ended.last_error.startswith("INTERNAL: ")
    assert (rows[fine.seq].status, rows[fine.seq].attempts_made) == ("delivered", 1)


async def test_an_account_state_whose_error_cannot_be_recorded_is_recorded_without_it(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("broken", smtp_server))
    refusal = MailError("Invalid login", code="EAUTH", smtp_code=535, permanent=True, auth_failure=True)
    # Past the sanitiser on purpose: the texts a Latin-1 535 carried before.
    refusal.message, refusal.response = "Invalid login: 535 refus\udce9", "535 refus\udce9"
    refusal.args = (refusal.message,)
    async with subscribe(server, account="broken") as sub:
        state = await record_account_state(server.runtime, "broken", refusal)
        event = await sub.wait_for(of("authenticationError"))
    assert state is not None and state.value == "AUTHENTICATION_ERROR"
    assert event["data"]["errorCode"] == "EAUTH" and "could not be recorded" in event["data"]["error"]
    account = (await server.gql('{ account(account: "broken") { state lastError { message code } } }'))[
        "account"
    ]
    assert account["state"] == "AUTHENTICATION_ERROR"
    assert account["lastError"] == {"message": event["data"]["error"], "code": "EAUTH"}
