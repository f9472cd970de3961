"""Reads never load message bodies: listing a queue of big messages costs what the listing returns.

The server runs in this process, so tracemalloc sees every allocation it makes for the request (the
driver's copy of each row included).
"""

from __future__ import annotations

import asyncio
import base64
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Figures, account_input, register_connected
from tests.harness import Server
from tests.servers.smtp import SmtpServer

SUBMIT = """mutation($i: SubmitMessageInput!) { submitMessage(account: "big", input: $i) { queueId } }"""
LISTING = "{ outbox { queueId messageId account status attempts sendAt envelope { from to } } }"
MESSAGES = 40
BODY_BYTES = 2 * 1024 * 1024


async def _queue_big_messages(server: Server) -> list[str]:
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()  # scheduled: never delivered here
    content = base64.b64encode(b"\xa5" * BODY_BYTES).decode()
    queue_ids = []
    for start in range(0, MESSAGES, 8):
        answers = await asyncio.gather(
            *(
                server.gql(
                    SUBMIT,
                    {
                        "i": {
                            "to": [{"address": "rcpt@example.org"}],
                            "subject": f"big {n}",
                            "attachments": [{"filename": "big.bin", "content": content}],
                            "sendAt": send_at,
                        }
                    },
                )
                for n in range(start, min(start + 8, MESSAGES))
            )
        )
        queue_ids += [a["submitMessage"]["queueId"] for a in answers]
    return queue_ids


@pytest.mark.fault(
    "a read-scope client lists an outbox of 40 queued 2 MB messages",
    "peak memory of the listing grows < 10 MB (message bodies are never selected)",
)
async def test_listing_big_queue_does_not_load_bodies(
    server: Server, smtp_server: SmtpServer, figures: Figures
) -> None:
    await register_connected(server, account_input("big", smtp_server))
    queue_ids = await _queue_big_messages(server)
    await server.gql("{ outbox { queueId } }")  # warm the parse/validation caches and the connection

    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        listed = await server.gql(LISTING)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = peak - before

    assert sorted(m["queueId"] for m in listed["outbox"]) == sorted(queue_ids)
    assert all(m["status"] == "queued" for m in listed["outbox"])
    figures["peak memory growth of one listing (MB)"] = round(growth / 1e6, 1)
    assert growth < 10 * 1024 * 1024, f"listing raised peak traced memory by {growth / 1e6:.1f} MB"

    # Getting and cancelling one answer without its bytes too (an access to `raw` would raise).
    one = queue_ids[0]
    got = await server.gql(f'{{ message(queueId: "{one}") {{ queueId status }} }}')
    assert got["message"] == {"queueId": one, "status": "queued"}
    assert (await server.gql(f'mutation {{ cancelMessage(queueId: "{one}") }}'))["cancelMessage"] is True
