"""Command line: serve, migrate, token create|list|revoke, schema, rotate-secret, service-secret, and
outbox/accounts (in ops_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gql_mail import log_format
from gql_mail.config import Settings
from gql_mail.log_redaction import install as install_log_redaction

T = TypeVar("T")


def _with_runtime(settings: Settings, work: Callable[..., Awaitable[T]]) -> T:
    from gql_mail.app import build_runtime
    from gql_mail.migrations import upgrade

    async def run() -> T:
        await upgrade(settings.database_url)
        rt = build_runtime(settings)
        try:
            return await work(rt)
        finally:
            await rt.db.dispose()

    return asyncio.run(run())


# Allocations (net) between young-generation collections; Python's default is 700.
GC_THRESHOLD = 20_000


def _settle_garbage_collector() -> None:
    """Move everything loaded at start-up out of the collector's sight and collect less often.

    A delivered message allocates many short-lived objects, and with the default thresholds the cyclic
    collector ran several times per batch of messages, each time walking the whole heap of long-lived
    modules and schema (`gc.freeze` takes those out of every later walk). Process-wide, so it belongs to
    `serve`, not to the app factory that tests call many times in one process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gql_mail.app import create_app
    from gql_mail.graphql.frame_writer import WS_PROTOCOL
    from gql_mail.malloc_tuning import tune_malloc

    host = args.host or settings.host
    port = args.port or settings.port
    if args.host or args.port:
        settings = settings.model_copy(update={"host": host, "port": port})
    if "service_url" not in settings.model_fields_set:
        settings = settings.model_copy(update={"service_url": f"http://{host}:{port}"})
    tune_malloc()
    if args.workers_only:
        from gql_mail.worker_node import run_workers

        _settle_garbage_collector()
        asyncio.run(run_workers(settings))
        return 0
    app = create_app(settings, workers=not args.no_workers)
    _settle_garbage_collector()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        # No logging configuration of uvicorn's own: its records go to the root handler `main` set up, in
        # the same format (text or JSON) as everything else.
        log_config=None,
        access_log=args.access_log or settings.access_log,
        lifespan="on",
        ws=WS_PROTOCOL,  # the one the fan-out's fast path writes to (see frame_writer)
        timeout_keep_alive=settings.http_keep_alive_seconds,
    )
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gql_mail.migrations import upgrade_sync

    upgrade_sync(settings.database_url)
    print("database is at the newest schema", file=sys.stderr)
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from gql_mail.services import tokens
    from gql_mail.services.errors import ServiceError

    try:
        if args.token_command == "create":
            _, token = _with_runtime(
                settings, lambda rt: tokens.create_token(rt, args.scope, args.description)
            )
            print(token)
        elif args.token_command == "list":
            for row in _with_runtime(settings, tokens.list_tokens):
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                created = f"{row.created_at:%Y-%m-%d %H:%M}"
                print(f"{row.id}\t{row.scope}\t{state}\t{created}\t{row.description or ''}")
        elif args.token_command == "revoke":
            _with_runtime(settings, lambda rt: tokens.revoke_token(rt, args.token_id))
            print(f"revoked {args.token_id}", file=sys.stderr)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from gql_mail.graphql.schema import export_sdl

    sdl = export_sdl()
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(sdl)
    else:
        sys.stdout.write(sdl)
    return 0


def cmd_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    from gql_mail.rotation import rotate_secret

    count = asyncio.run(rotate_secret(settings, old_secret=args.old_secret, new_secret=args.new_secret))
    print(f"re-encrypted {count} secret(s)", file=sys.stderr)
    return 0


def cmd_service_secret(args: argparse.Namespace, settings: Settings) -> int:
    """Print the service secret (the key of X-EE-Wh-Signature for webhooks without a secret of their own),
    or with --set replace it by the line read from stdin (not an argument: it would show in `ps` and the
    shell's history)."""
    from gql_mail.services import settings as service_settings
    from gql_mail.services.errors import ServiceError

    if not args.set:
        print(_with_runtime(settings, service_settings.service_secret))
        return 0
    value = sys.stdin.readline().rstrip("\r\n")
    try:
        _with_runtime(settings, lambda rt: service_settings.set_service_secret(rt, value))
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print("service secret replaced", file=sys.stderr)
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("gql-mail")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def cmd_ops(args: argparse.Namespace, settings: Settings) -> int:
    from gql_mail.ops_cli import run_command

    return run_command(args, settings, _with_runtime)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gql-mail", description="GraphQL email sending through your users' mailboxes"
    )
    p.add_argument("--version", action="version", version=f"gql-mail {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (applies migrations first)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="text, or one JSON object per line (default: GQL_MAIL_LOG_FORMAT, else text)",
    )
    roles = serve.add_mutually_exclusive_group()
    roles.add_argument(
        "--no-workers",
        action="store_true",
        help="API only: no delivery, webhook or Sent-copy workers (other nodes on the database run them)",
    )
    roles.add_argument(
        "--workers-only",
        action="store_true",
        help="workers only, no HTTP (--host/--port unused): a worker node of a PostgreSQL deployment",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every HTTP request (uvicorn's access log; off by default, or GQL_MAIL_ACCESS_LOG)",
    )
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="manage access tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="print a new token (only the token)")
    create.add_argument("--scope", default="api", choices=["api", "read", "metrics"])
    create.add_argument("--description", default=None)
    tsub.add_parser("list", help="list tokens (never the tokens themselves)")
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    token.set_defaults(func=cmd_token)

    schema = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    schema.add_argument("--output", "-o", default=None)
    schema.set_defaults(func=cmd_schema)

    rotate = sub.add_parser(
        "rotate-secret",
        help="re-encrypt stored secrets: from --old-secret (or GQL_MAIL_SECRET) to --new-secret",
    )
    rotate.add_argument("--old-secret", default=None)
    rotate.add_argument("--new-secret", required=True)
    rotate.set_defaults(func=cmd_rotate_secret)

    service_secret = sub.add_parser(
        "service-secret",
        help="print the key that signs X-EE-Wh-Signature for webhooks without a secret (EmailEngine's "
        "serviceSecret); --set reads a new one from stdin",
    )
    service_secret.add_argument("--set", action="store_true")
    service_secret.set_defaults(func=cmd_service_secret)

    from gql_mail.ops_cli import add_parsers

    add_parsers(sub, cmd_ops)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    install_log_redaction()  # before anything logs: no credential in any record, at any level
    settings = Settings()
    if getattr(args, "log_format", None):
        settings = settings.model_copy(update={"log_format": args.log_format})
    log_format.configure(settings.log_level, settings.log_format)
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
