"""gql_mail/mail/imap.py uses aioimaplib's internals; a release without them fails here, by name."""

from __future__ import annotations

import asyncio
import inspect
import socket

import aioimaplib  # type: ignore[import-untyped]

PROTOCOL_METHODS = ("new_tag", "execute", "simple_command", "capability", "logout")
PROTOCOL_ATTRIBUTES = ("capabilities", "state", "transport", "tasks")


def test_module_level_names() -> None:
    missing = [
        name for name in ("Command", "IMAP4", "NONAUTH", "AUTH", "SELECTED") if not hasattr(aioimaplib, name)
    ]
    assert not missing, f"aioimaplib lacks {missing}"
    assert callable(getattr(aioimaplib.Command, "flush", None)), "aioimaplib.Command.flush is gone"
    parameters = inspect.signature(aioimaplib.Command.__init__).parameters
    assert "loop" in parameters and any(p.kind is p.VAR_POSITIONAL for p in parameters.values()), (
        "aioimaplib.Command is no longer Command(name, tag, *args, loop=...): "
        f"{inspect.signature(aioimaplib.Command)}"
    )
    assert "scrub" in inspect.signature(aioimaplib.IMAP4ClientProtocol.execute).parameters, (
        "IMAP4ClientProtocol.execute takes no scrub= any more"
    )


async def test_client_and_protocol_internals() -> None:
    with socket.socket() as sock:  # a port nobody listens on: the client is only inspected
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=1)
    try:
        missing = [name for name in ("protocol", "tasks", "_client_task") if not hasattr(client, name)]
        assert not missing, f"aioimaplib.IMAP4 instances lack {missing}"
        protocol = client.protocol
        missing = [name for name in PROTOCOL_METHODS if not callable(getattr(protocol, name, None))]
        missing += [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
        assert not missing, f"aioimaplib's protocol lacks {missing}"
        command = aioimaplib.Command("NOOP", protocol.new_tag(), loop=asyncio.get_running_loop())
        assert hasattr(command, "_resp_lines"), "aioimaplib.Command lacks _resp_lines"
    finally:
        client._client_task.cancel()
        await asyncio.gather(client._client_task, return_exceptions=True)
