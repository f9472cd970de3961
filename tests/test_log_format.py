"""JSON log lines (gql_mail/log_format.py) and the one INFO line per delivery outcome."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gql_mail.log_format import JsonFormatter
from gql_mail.log_redaction import credentials_in_use, install
from tests.conftest import account_input, register_connected
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId messageId }
}"""


def test_a_json_line_carries_extras_and_is_redacted() -> None:
    install()
    logger = logging.getLogger("gql_mail.test_json")
    with credentials_in_use("user", "hunter2-secret-pass", None):
        try:
            raise RuntimeError("login failed with hunter2-secret-pass\nsecond line")
        except RuntimeError:
            record = logger.makeRecord(
                logger.name,
                logging.ERROR,
                __file__,
                1,
                "failed for %s",
                ("acc",),
                exc_info=sys.exc_info(),
                extra={"queueId": "q1", "account": "acc", "note": "Authorization: Bearer gqlm_topsecret"},
            )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    value = json.loads(line)
    assert value["level"] == "ERROR" and value["logger"] == "gql_mail.test_json"
    assert value["message"] == "failed for acc" and value["time"].endswith("+00:00")
    assert value["queueId"] == "q1" and value["account"] == "acc"
    assert value["note"] == "Authorization: Bearer [REDACTED]"
    assert "RuntimeError" in value["exception"] and "hunter2-secret-pass" not in line


async def test_each_delivery_outcome_is_one_info_line(
    server: Server, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gql_mail.delivery")
    await register_connected(server, account_input("logs", smtp_server))
    smtp_server.fail_next(1, code=451, message="4.3.0 Try again later")
    message = {"from": {"address": "logs@example.com"}, "to": [{"address": "to@example.org"}], "text": "hi"}
    async with subscribe(server, account="logs") as sub:
        submitted = (await server.gql(SUBMIT, {"account": "logs", "input": message}))["submitMessage"]
        await sub.wait_for(lambda e: e["event"] == "messageDeliveryError")
        server.advance(3600)
        # The outcome's line is written as its transaction commits, before the event reaches anyone.
        await sub.wait_for(lambda e: e["event"] == "messageSent")
    lines = [r for r in caplog.records if r.name == "gql_mail.delivery"]
    assert [(r.levelname, r.__dict__["result"]) for r in lines] == [("INFO", "retried"), ("INFO", "sent")]
    for record in lines:
        assert record.__dict__["queueId"] == submitted["queueId"]
        assert record.__dict__["messageId"] == submitted["messageId"]
        assert record.__dict__["account"] == "logs"
        assert submitted["queueId"] in record.getMessage()
    assert lines[0].__dict__["errorCode"] and lines[0].__dict__["smtpResponseCode"] == 451
