"""`gql-mail serve`'s operating options, run as a user runs them (a real process): JSON logs through a
whole send, the access log off unless asked for, `--version`, and an API-only node beside a
workers-only one."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import account_input
from tests.faults.helpers import HOOK, SUBMIT, simple
from tests.faults.process import ServerProcess
from tests.harness import wait_webhook, webhook_event
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver
from tests.test_cli import cli
from tests.test_metrics import parse, value

REGISTER = "mutation R($input: RegisterAccountInput!) { registerAccount(input: $input) { state } }"


def json_lines(proc: ServerProcess) -> list[dict[str, Any]]:
    """Every line the process wrote (stdout and stderr), each parsed as one JSON object."""
    lines = [line for line in proc.logs().splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    parsed = []
    for line in lines:
        value = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(value, dict), line
        assert {"time", "level", "logger", "message"} <= value.keys(), line
        parsed.append(value)
    return parsed


def test_version(tmp_path: Path) -> None:
    result = cli(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gql-mail 0.1.0"


async def test_json_logs_of_a_whole_send(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_LOG_FORMAT="json", GQL_MAIL_LOG_LEVEL="info").start()
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            await proc.gql(http, HOOK, {"input": {"url": webhook_receiver.url}})
            await proc.gql(http, REGISTER, {"input": account_input("jsonlog", smtp_server)})
            await wait_webhook(webhook_receiver, webhook_event("accountConnected"), timeout=15)
            submitted = (await proc.gql(http, SUBMIT, {"account": "jsonlog", "input": simple()}))[
                "submitMessage"
            ]
            await wait_webhook(webhook_receiver, webhook_event("messageSent", submitted["queueId"]), 15)
            assert (await http.get(proc.url + "/health")).status_code == 200
    finally:
        proc.stop()
    lines = json_lines(proc)
    outcomes = [line for line in lines if line.get("queueId") == submitted["queueId"]]
    assert len(outcomes) == 1, outcomes  # one INFO line per delivery outcome
    (sent,) = outcomes
    assert sent["level"] == "INFO" and sent["logger"] == "gql_mail.delivery"
    assert sent["account"] == "jsonlog" and sent["messageId"] == submitted["messageId"]
    assert sent["result"] == "sent" and sent["response"].startswith("250")
    assert any("Uvicorn running on" in line["message"] for line in lines), "uvicorn's lines are JSON too"
    assert not [line for line in lines if line["logger"] == "uvicorn.access"], "access log off by default"
    assert smtp_server.password not in proc.logs()


async def test_access_log_on_request_in_json_and_redacted(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_LOG_LEVEL="info").start("--log-format", "json", "--access-log")
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            answer = await http.get(proc.url + "/v1/accounts", params={"access_token": proc.token})
            assert answer.status_code == 200
    finally:
        proc.stop()
    access = [line for line in json_lines(proc) if line["logger"] == "uvicorn.access"]
    assert any("/v1/accounts" in line["message"] for line in access), access
    assert proc.token not in proc.logs()
    assert any("access_token=[REDACTED]" in line["message"] for line in access)


async def test_text_logs_by_default(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_LOG_LEVEL="info").start()
    proc.stop()
    log = proc.logs()
    assert "INFO uvicorn.error: Uvicorn running on" in log
    assert not log.lstrip().startswith("{")


ACCOUNT_STATE = "query A($a: ID!) { account(account: $a) { state } }"


def start_worker_node(api: ServerProcess, log_path: Path) -> subprocess.Popen[bytes]:
    """`gql-mail serve --workers-only` on the API node's database, its output in `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gql_mail", "serve", "--workers-only"],
            env={**api.env, "GQL_MAIL_LOG_LEVEL": "info"}, stdout=log, stderr=subprocess.STDOUT,
            cwd=api.directory,
        )  # fmt: skip


async def wait_connected(api: ServerProcess, http: httpx.AsyncClient, account: str) -> None:
    async with asyncio.timeout(15):
        while (await api.gql(http, ACCOUNT_STATE, {"a": account}))["account"]["state"] != "CONNECTED":  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.05)


async def split_roles(tmp_path: Path, smtp: SmtpServer, receiver: WebhookReceiver, **env: str) -> None:
    """`serve --no-workers` takes requests and delivers nothing; `serve --workers-only` on the same
    database delivers without serving HTTP, and stops cleanly on SIGTERM."""
    api = ServerProcess(tmp_path, **env).start("--no-workers")
    worker: subprocess.Popen[bytes] | None = None
    worker_log = tmp_path / "worker.log"
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            ready = await http.get(api.url + "/health/ready")
            assert ready.status_code == 200 and ready.json() == {"status": "ok", "workers": "disabled"}
            await api.gql(http, HOOK, {"input": {"url": receiver.url}})
            await api.gql(http, REGISTER, {"input": account_input("split", smtp)})
            # The account check a registration asks for runs on the node that took it.
            await wait_connected(api, http, "split")
            first = (await api.gql(http, SUBMIT, {"account": "split", "input": simple()}))["submitMessage"]
            headers = {"Authorization": f"Bearer {api.token}"}
            before = parse((await http.get(api.url + "/metrics", headers=headers)).text)
            assert value(before, "gql_mail_workers_alive") == 0, "the API node claims nothing"
            assert value(before, "gql_mail_queue_messages", status="queued") == 1

            worker = start_worker_node(api, worker_log)
            await wait_webhook(receiver, webhook_event("messageSent", first["queueId"]), 30)
            # One submitted while the worker node runs: woken through the database (PostgreSQL), or found
            # by its next poll (SQLite).
            second = (await api.gql(http, SUBMIT, {"account": "split", "input": simple()}))["submitMessage"]
            await wait_webhook(receiver, webhook_event("messageSent", second["queueId"]), 15)
            assert len(await smtp.wait_for_messages(2)) == 2
            after = parse((await http.get(api.url + "/metrics", headers=headers)).text)
            assert value(after, "gql_mail_workers_alive") == 1
            assert value(after, "gql_mail_queue_messages", status="sent") == 2
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(15)
        api.stop()
    assert worker is not None and worker.returncode == 0, worker_log.read_text()
    text = worker_log.read_text()
    assert "workers running without HTTP" in text and "workers stopped" in text
    assert "Uvicorn" not in text


async def test_an_api_node_and_a_worker_node_split_the_work(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    await split_roles(tmp_path, smtp_server, webhook_receiver)


async def test_on_postgresql_the_api_node_wakes_the_worker_node(
    tmp_path: Path, pg_url: str, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    """Polling every 30 s: a message submitted to the API node goes out at once only because the
    submission's wake-up reaches the worker node through the relay."""
    await split_roles(
        tmp_path,
        smtp_server,
        webhook_receiver,
        GQL_MAIL_DATABASE_URL=pg_url,
        GQL_MAIL_POLL_INTERVAL_SECONDS="30",
    )


def test_the_two_roles_exclude_each_other(tmp_path: Path) -> None:
    both = cli(tmp_path, "serve", "--no-workers", "--workers-only")
    assert both.returncode == 2 and "not allowed with" in both.stderr
