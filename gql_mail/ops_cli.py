"""`gql-mail outbox list|show|cancel|retry` and `gql-mail accounts list|show`: the queue and the accounts
from a shell, against the configured database.

They call the services directly, like `token`, so they see what every node sees and apply the same rules
(listing, paging, cancelling, retrying) as the API; nothing needs a running server or a token. Output is a
table for people, or `--json` (the API's field names) for scripts. Exit codes: 0 done, 1 not done (a
cancel that found the message already sending or finished), 2 refused (unknown id, bad input, conflict).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.config import Settings
from gql_mail.events import iso
from gql_mail.runtime import Runtime

RunWith = Callable[[Settings, Callable[[Runtime], Any]], Any]


def _when(value: datetime | None) -> str | None:
    return iso(utc(value)) if value is not None else None


def message_dict(row: models.OutboxMessage) -> dict[str, Any]:
    """A message as the API names its fields (never its body)."""
    return {
        "queueId": row.id,
        "account": row.account_id,
        "messageId": row.message_id,
        "status": row.status,
        "attemptsMade": row.attempts_made,
        "attempts": row.attempts,
        "nextAttempt": _when(row.next_attempt_at) if row.status in models.ACTIVE_STATUSES else None,
        "sendAt": _when(row.send_at),
        "createdAt": _when(row.created_at),
        "sentAt": _when(row.sent_at),
        "envelope": {"from": row.envelope_from, "to": list(row.envelope_to)},
        "response": row.response,
        "lastError": {"message": row.last_error_message, "code": row.last_error_code}
        if row.last_error_message
        else None,
        "copyStatus": row.copy_status,
    }


def account_dict(row: models.Account) -> dict[str, Any]:
    """An account as the API names its fields (never a secret: none is read)."""
    return {
        "account": row.id,
        "name": row.name,
        "email": row.email,
        "state": row.state,
        "lastError": {"message": row.last_error_message, "code": row.last_error_code}
        if row.last_error_message
        else None,
        "smtp": {"host": row.smtp_host, "port": row.smtp_port, "secure": row.smtp_secure},
        "imap": None
        if row.imap_disabled
        else {"host": row.imap_host, "port": row.imap_port, "secure": row.imap_secure},
        "createdAt": _when(row.created_at),
        "connectedAt": _when(row.connected_at),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns as wide as their widest cell; None shows as '-', and a multi-line cell (an SMTP
    server's reply) as one line."""
    cells = [[("-" if c is None else " ".join(str(c).split())) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [list(headers), *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _page_footer(total: int, has_next: bool, end_cursor: str | None) -> None:
    print(f"{total} in all" + (f"; next page: --after {end_cursor}" if has_next else ""), file=sys.stderr)


def _outbox_list(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import outbox

    f = outbox.OutboxFilter(
        account_id=args.account,
        statuses=args.status,
        created_from=args.created_from,
        created_to=args.created_to,
        recipient=args.recipient,
    )

    async def work(rt: Runtime) -> tuple[Any, int]:
        page = await outbox.outbox_after(rt, f, first=args.first, after=args.after)
        return page, await outbox.count_outbox(rt, f)

    page, total = run(settings, work)
    rows = [r for _, r in page.edges]
    if args.json:
        _print_json(
            {
                "totalCount": total,
                "hasNextPage": page.has_next,
                "endCursor": page.end_cursor,
                "messages": [message_dict(r) for r in rows],
            }
        )
        return 0
    headers = ("QUEUE ID", "ACCOUNT", "STATUS", "TRIES", "CREATED", "TO", "LAST ERROR")
    print(
        table(
            headers,
            [
                (
                    r.id,
                    r.account_id,
                    r.status,
                    f"{r.attempts_made}/{r.attempts}",
                    _when(r.created_at),
                    ", ".join(r.envelope_to),
                    r.last_error_code,
                )
                for r in rows
            ],
        )
    )
    _page_footer(total, page.has_next, page.end_cursor)
    return 0


def _outbox_show(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import history, outbox

    async def work(rt: Runtime) -> tuple[Any, Any, Any]:
        row = await outbox.get_message(rt, args.queue_id)
        attempts = (await history.attempts_of(rt, [row.id]))[row.id]
        deliveries = (await history.deliveries_of(rt, [row.id]))[row.id]
        return row, attempts, deliveries

    row, attempts, deliveries = run(settings, work)
    events = history.derive_events(row, attempts)
    shown = message_dict(row)
    shown["deliveryAttempts"] = [
        {
            "attempt": a.attempt,
            "attemptedAt": iso(a.attempted_at),
            "duration": a.duration_ms / 1000 if a.duration_ms is not None else None,
            "result": a.result,
            "errorCode": a.error_code,
            "smtpResponseCode": a.smtp_code,
            "response": a.response,
        }
        for a in attempts
    ]
    shown["events"] = [{"event": e.event, "date": iso(e.date)} for e in events]
    shown["webhookDeliveries"] = [
        {
            "webhook": d.webhook_id,
            "event": d.event,
            "status": d.status,
            "attempts": d.attempts,
            "lastError": d.last_error,
        }
        for d in deliveries
    ]
    if args.json:
        _print_json(shown)
        return 0
    for key in ("queueId", "account", "messageId", "status", "createdAt", "sendAt", "nextAttempt", "sentAt"):
        print(f"{key + ':':<14}{shown[key] or '-'}")
    print(f"{'tries:':<14}{row.attempts_made}/{row.attempts}")
    print(f"{'to:':<14}{', '.join(row.envelope_to)}")
    if row.last_error_message:
        print(f"{'last error:':<14}{row.last_error_code}: {row.last_error_message}")
    print("\nattempts:")
    print(
        table(
            ("#", "AT", "SECONDS", "RESULT", "CODE", "SMTP", "RESPONSE"),
            [
                (
                    a["attempt"],
                    a["attemptedAt"],
                    a["duration"],
                    a["result"],
                    a["errorCode"],
                    a["smtpResponseCode"],
                    a["response"],
                )
                for a in shown["deliveryAttempts"]
            ],
        )
    )
    print("\nevents:")
    print(table(("EVENT", "DATE"), [(e["event"], e["date"]) for e in shown["events"]]))
    print("\nwebhook deliveries:")
    print(
        table(
            ("WEBHOOK", "EVENT", "STATUS", "POSTS", "LAST ERROR"),
            [
                (d["webhook"], d["event"], d["status"], d["attempts"], d["lastError"])
                for d in shown["webhookDeliveries"]
            ],
        )
    )
    return 0


def _outbox_cancel(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import outbox

    cancelled = bool(run(settings, lambda rt: outbox.cancel_message(rt, args.queue_id)))
    if args.json:
        _print_json({"queueId": args.queue_id, "cancelled": cancelled})
    else:
        print("cancelled" if cancelled else "not cancelled: it is being sent or has finished")
    return 0 if cancelled else 1


def _outbox_retry(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import outbox

    row = run(settings, lambda rt: outbox.retry_message(rt, args.queue_id))
    if args.json:
        _print_json(message_dict(row))
    else:
        print(f"queued again: {row.id} ({row.attempts} attempts)")
    return 0


def _accounts_list(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import accounts

    state = models.AccountState(args.state) if args.state else None

    async def work(rt: Runtime) -> tuple[Any, int]:
        page = await accounts.accounts_after(
            rt, first=args.first, after=args.after, state=state, query=args.query
        )
        return page, await accounts.count_accounts(rt, state=state, query=args.query)

    page, total = run(settings, work)
    rows = [r for _, r in page.edges]
    if args.json:
        _print_json(
            {
                "totalCount": total,
                "hasNextPage": page.has_next,
                "endCursor": page.end_cursor,
                "accounts": [account_dict(r) for r in rows],
            }
        )
        return 0
    print(
        table(
            ("ACCOUNT", "STATE", "EMAIL", "SMTP", "CREATED", "LAST ERROR"),
            [
                (
                    r.id,
                    r.state,
                    r.email,
                    f"{r.smtp_host}:{r.smtp_port}",
                    _when(r.created_at),
                    r.last_error_code,
                )
                for r in rows
            ],
        )
    )
    _page_footer(total, page.has_next, page.end_cursor)
    return 0


def _accounts_show(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    from gql_mail.services import accounts

    shown = account_dict(run(settings, lambda rt: accounts.get_account(rt, args.account)))
    if args.json:
        _print_json(shown)
        return 0
    for key, value in shown.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key + ':':<14}{'-' if value is None else value}")
    return 0


_COMMANDS = {
    ("outbox", "list"): _outbox_list,
    ("outbox", "show"): _outbox_show,
    ("outbox", "cancel"): _outbox_cancel,
    ("outbox", "retry"): _outbox_retry,
    ("accounts", "list"): _accounts_list,
    ("accounts", "show"): _accounts_show,
}


def run_command(args: argparse.Namespace, settings: Settings, run: RunWith) -> int:
    """Run one subcommand; a refused one (unknown id, bad input, conflict) prints why and exits 2."""
    from gql_mail.services.errors import ServiceError

    try:
        return _COMMANDS[(args.command, args.sub_command)](args, settings, run)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


def _time(value: str) -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    parsed = datetime.fromisoformat(value)
    return utc(parsed) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_parsers(sub: Any, func: Callable[[argparse.Namespace, Settings], int]) -> None:
    """The `outbox` and `accounts` subcommands, on the main parser's subparsers."""
    from gql_mail.services import cursors

    def paging(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--first", type=int, default=cursors.DEFAULT_FIRST, help=f"rows per page (1-{cursors.MAX_FIRST})"
        )
        p.add_argument("--after", default=None, help="the cursor the previous page printed")

    def as_json(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON (the API's field names)")

    out = sub.add_parser("outbox", help="list, show, cancel or retry queued and recent messages")
    osub = out.add_subparsers(dest="sub_command", required=True)
    listing = osub.add_parser("list", help="the outbox, newest first (as the API's outboxConnection)")
    listing.add_argument("--account", default=None)
    listing.add_argument("--status", action="append", default=None, help="repeat for several")
    listing.add_argument("--recipient", default=None)
    listing.add_argument(
        "--from", dest="created_from", type=_time, default=None, help="created at or after (ISO)"
    )
    listing.add_argument("--to", dest="created_to", type=_time, default=None, help="created before (ISO)")
    paging(listing)
    as_json(listing)
    for name, text in (
        ("show", "one message with its attempts, events and webhook deliveries"),
        ("cancel", "take a queued message out of the queue"),
        ("retry", "queue a failed message again with a fresh attempt budget"),
    ):
        command = osub.add_parser(name, help=text)
        command.add_argument("queue_id")
        as_json(command)
    out.set_defaults(func=func)

    acc = sub.add_parser("accounts", help="list or show accounts")
    asub = acc.add_subparsers(dest="sub_command", required=True)
    listing = asub.add_parser("list", help="accounts in registration order")
    listing.add_argument("--state", default=None, choices=[s.value for s in models.AccountState])
    listing.add_argument("--query", default=None, help="part of the id, name or email")
    paging(listing)
    as_json(listing)
    show = asub.add_parser("show", help="one account (never its secrets)")
    show.add_argument("account")
    as_json(show)
    acc.set_defaults(func=func)
