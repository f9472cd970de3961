"""Smoke test of an installed gql-mail, as a user meets it: `python .ci/wheel_smoke.py VENV/bin/gql-mail`.

Run by .ci/run against a virtualenv holding only the built wheel and its dependencies, from empty
temporary directories, so nothing of the source tree can stand in for what the wheel lacks (the migration
scripts, the static files). Two rounds: `migrate`, `token create`, `serve`, /health, one authenticated
GraphQL query, the REST API's OpenAPI document and Swagger UI's script; then `serve` alone on a new
directory (it migrates at start), then a token, the query and the document.
Standard library only; any failure raises with the command's output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

QUERY = "{ accounts { account } }"


def environment() -> dict[str, str]:
    """This process's environment without any GQL_MAIL_ setting: the defaults are what is under test."""
    return {key: value for key, value in os.environ.items() if not key.startswith("GQL_MAIL_")}


def run(gql_mail: str, cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [gql_mail, *args], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise SystemExit(f"`gql-mail {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(url: str, body: dict[str, object] | None = None, token: str | None = None) -> object:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as response:
        return json.loads(response.read())


def wait_for_health(server: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = request(f"{base}/health")
            break
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None:
                raise SystemExit(f"`gql-mail serve` exited ({server.returncode}):\n{stop(server)}") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"`gql-mail serve` did not answer within 60 s:\n{stop(server)}") from None
            time.sleep(0.1)  # the server is still starting (migrations, binding the port)
    if answer != {"status": "ok"}:
        raise SystemExit(f"/health answered {answer!r}")


def query(base: str, token: str) -> None:
    answer = request(f"{base}/graphql", {"query": QUERY}, token)
    if answer != {"data": {"accounts": []}}:
        raise SystemExit(f"{QUERY} answered {answer!r}")


def rest_docs(base: str) -> None:
    """The REST API's document and the Swagger UI script its page loads (static files of the wheel)."""
    document = request(f"{base}/v1/openapi.json")
    if not isinstance(document, dict) or "/v1/account" not in document.get("paths", {}):
        raise SystemExit(f"/v1/openapi.json answered {document!r}")
    with urllib.request.urlopen(f"{base}/v1/docs", timeout=10) as response:
        page = response.read().decode()
    script = page.split('<script src="', 1)[1].split('"', 1)[0]
    with urllib.request.urlopen(base + script, timeout=10) as response:
        if len(response.read()) < 100_000:
            raise SystemExit(f"{script} is not Swagger UI's bundle")


def stop(server: subprocess.Popen[str]) -> str:
    if server.poll() is None:
        server.terminate()
    try:
        _, errors = server.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        _, errors = server.communicate()
    return errors


def serve(gql_mail: str, cwd: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [gql_mail, "serve", "--port", str(port)],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def round_trip(gql_mail: str, cwd: Path, *, migrate_first: bool) -> None:
    token = ""
    if migrate_first:
        run(gql_mail, cwd, "migrate")
        token = run(gql_mail, cwd, "token", "create", "--description", "smoke").strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve(gql_mail, cwd, port)
    try:
        wait_for_health(server, base)
        if not token:
            token = run(gql_mail, cwd, "token", "create", "--description", "smoke").strip()
        query(base, token)
        rest_docs(base)
    finally:
        errors = stop(server)
    if server.returncode not in (0, -15):
        raise SystemExit(f"`gql-mail serve` ended with {server.returncode}:\n{errors}")
    print(f"ok: {'migrate, token, serve' if migrate_first else 'serve alone'} in {cwd}")


def main() -> None:
    gql_mail = sys.argv[1]
    for migrate_first in (True, False):
        with tempfile.TemporaryDirectory(prefix="gql-mail-smoke-") as directory:
            round_trip(gql_mail, Path(directory), migrate_first=migrate_first)


if __name__ == "__main__":
    main()
