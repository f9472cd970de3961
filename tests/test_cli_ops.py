"""`gql-mail outbox …` and `gql-mail accounts …` run as a user runs them (`python -m gql_mail` in a
subprocess) against the database a real server filled through a real flow."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.conftest import account_input, register_connected
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId }
}"""


async def cli(server: Server, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GQL_MAIL_DATABASE_URL": server.settings.database_url,
        "GQL_MAIL_SECRET": server.settings.secret_value() or "",
        "GQL_MAIL_DATA_DIR": str(tmp_path / "cli-data"),
        "GQL_MAIL_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "gql_mail", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )


async def cli_json(server: Server, tmp_path: Path, *args: str) -> Any:
    done = await cli(server, tmp_path, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def submit(server: Server, account: str, **extra: Any) -> str:
    message = {"to": [{"address": "to@example.org"}], "subject": "Hi", "text": "Hello", **extra}
    async with subscribe(server, account=account) as sub:
        answer = await server.gql(SUBMIT, {"account": account, "input": message})
        queue_id: str = answer["submitMessage"]["queueId"]
        if "sendAt" not in extra:
            await sub.wait_for(
                lambda e: e["event"] in ("messageSent", "messageFailed") and e["data"]["queueId"] == queue_id
            )
    await server.drain()
    return queue_id


async def test_outbox_and_accounts_commands(server: Server, smtp_server: SmtpServer, tmp_path: Path) -> None:
    await register_connected(server, account_input("cliacc", smtp_server))
    sent = await submit(server, "cliacc")
    smtp_server.fail_next(1, code=554, message="5.7.1 Not now")
    failed = await submit(server, "cliacc")
    later = (server.clock.now() + timedelta(days=1)).isoformat()
    scheduled = await submit(server, "cliacc", sendAt=later)

    listed = await cli(server, tmp_path, "accounts", "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["ACCOUNT", "STATE", "EMAIL"] and row.split()[:2] == ["cliacc", "CONNECTED"]
    shown = await cli_json(server, tmp_path, "accounts", "show", "cliacc")
    assert (shown["account"], shown["state"], shown["email"]) == ("cliacc", "CONNECTED", "cliacc@example.com")
    unknown = await cli(server, tmp_path, "accounts", "show", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr

    everything = await cli_json(server, tmp_path, "outbox", "list")
    assert everything["totalCount"] == 3 and not everything["hasNextPage"]
    assert [m["queueId"] for m in everything["messages"]] == [scheduled, failed, sent]
    assert [m["status"] for m in everything["messages"]] == ["queued", "failed", "sent"]
    table = await cli(server, tmp_path, "outbox", "list", "--status", "failed")
    assert table.returncode == 0 and failed in table.stdout and sent not in table.stdout
    assert "554" not in table.stdout and "EMESSAGE" in table.stdout

    first = await cli(server, tmp_path, "outbox", "list", "--first", "2")
    assert "next page: --after " in first.stderr
    after = first.stderr.rsplit("--after ", 1)[1].strip()
    rest = await cli_json(server, tmp_path, "outbox", "list", "--first", "2", "--after", after)
    assert [m["queueId"] for m in rest["messages"]] == [sent]
    bad = await cli(server, tmp_path, "outbox", "list", "--after", "garbage")
    assert bad.returncode == 2 and "after" in bad.stderr

    history = await cli_json(server, tmp_path, "outbox", "show", failed)
    assert [(a["result"], a["smtpResponseCode"]) for a in history["deliveryAttempts"]] == [("failed", 554)]
    assert [e["event"] for e in history["events"]] == ["messageDeliveryError", "messageFailed"]
    readable = await cli(server, tmp_path, "outbox", "show", sent)
    assert readable.returncode == 0 and "messageSent" in readable.stdout and "250" in readable.stdout

    assert (await cli(server, tmp_path, "outbox", "cancel", sent)).returncode == 1
    assert (await cli(server, tmp_path, "outbox", "cancel", scheduled)).returncode == 0
    refused = await cli(server, tmp_path, "outbox", "retry", sent)
    assert refused.returncode == 2 and "only a failed message" in refused.stderr

    async with subscribe(server, account="cliacc") as sub:
        retried = await cli(server, tmp_path, "outbox", "retry", failed)
        assert retried.returncode == 0, retried.stderr
        server.advance(3600)  # the CLI queued it at the real time; the server's clock is a manual one
        await sub.wait_for(lambda e: e["event"] == "messageSent" and e["data"]["queueId"] == failed)
    await server.drain()
    statuses = {
        m["queueId"]: m["status"] for m in (await cli_json(server, tmp_path, "outbox", "list"))["messages"]
    }
    assert statuses == {sent: "sent", failed: "sent", scheduled: "cancelled"}
