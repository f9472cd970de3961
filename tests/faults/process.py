"""gql-mail as a real subprocess (`python -m gql_mail serve`), for faults that need a real process:
`kill -9` mid-delivery, and load from many clients against the SQLite default.

The database is a file in the test's directory, so a second process started on it after a kill finds
what the first left behind. Readiness is a bounded poll of `/health` (start-up, not a test result).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import GraphQLErrors, free_port

_START_TIMEOUT = 30.0


class ServerProcess:
    def __init__(self, directory: Path, **env: str) -> None:
        self.directory = directory
        self.db_path = directory / "gql_mail.db"
        self.env = {
            **os.environ,
            "GQL_MAIL_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            "GQL_MAIL_SECRET": "fault-suite-secret-" + "x" * 20,
            "GQL_MAIL_DATA_DIR": str(directory / "data"),
            "GQL_MAIL_POLL_INTERVAL_SECONDS": "0.2",
            "GQL_MAIL_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.token = self._cli("token", "create", "--description", "fault suite")

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gql_mail", *args],
            env=self.env, capture_output=True, timeout=60, check=True, cwd=self.directory,
        )  # fmt: skip
        return done.stdout.decode().strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"server-{self.starts}.log"

    def logs(self) -> str:
        return "".join(
            (self.directory / f"server-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    def start(self, *options: str) -> ServerProcess:
        """Start `gql-mail serve` (with `options`, e.g. --log-format json) and wait until it answers."""
        self.starts += 1
        self.port = free_port()
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gql_mail", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *options],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gql-mail exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)  # start-up readiness, not a test result
        raise RuntimeError(f"gql-mail did not answer /health within {_START_TIMEOUT}s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL: nothing runs at shutdown or is flushed; claims stay taken until its heartbeat lapses."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the database file directly (only while no server is running: what a crash left behind)."""
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    async def gql(self, http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = await http.post(
            self.url + "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        body = response.json()
        if body.get("errors"):
            raise GraphQLErrors(body["errors"])
        assert response.status_code == 200, response.text
        return body["data"]
