"""A real OAuth2 token endpoint on 127.0.0.1 (HTTP, its own thread), as Google's and Microsoft's behave.

`POST /token` with the refresh_token grant (form body, client credentials in the body or Basic auth) issues
a new short-lived access token and *rotates* the refresh token: the old one is dead from then on. The
authorization_code grant takes a one-time code (`issue_code`, what a consent screen would hand out). On demand
it answers `invalid_grant` (400, JSON) or 503, and it counts every call. `on_issue` hears each new access
token, so a mail server can accept exactly the currently valid one.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

__all__ = ["TokenServer"]


class TokenServer:
    def __init__(
        self,
        *,
        client_id: str = "client-id",
        client_secret: str | None = None,
        expires_in: int = 3600,
        on_issue: Callable[[str], None] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or f"client-secret-{uuid.uuid4().hex}"
        self.expires_in = expires_in
        self.on_issue = on_issue
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self._refresh_tokens: set[str] = set()
        self._codes: dict[str, str] = {}  # authorization code -> the redirect_uri it was given for
        self._failures: list[tuple[int, dict[str, Any] | str]] = []
        self._failing: tuple[int, dict[str, Any] | str] | None = None
        self.calls = 0
        self.requests: list[dict[str, str]] = []
        self.access_token: str | None = None
        # Every access and refresh token it ever issued (tests look for them in logs).
        self.issued: list[str] = []
        self._http: ThreadingHTTPServer | None = None
        # Cleared by `hold()`: token requests then wait (on the server's thread) until `release()`.
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Semaphore(0)  # released once per request that arrived while held
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = owner._answer(self.path, form, self.headers.get("Authorization"))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                kind = "text/plain" if isinstance(body, str) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}/token"

    # -- scripting -----------------------------------------------------------------------------------

    def grant(self) -> tuple[str, str]:
        """A new (access token, refresh token) pair, as a consent screen would give: both valid now."""
        with self._lock:
            access, refresh = self._new_pair()
        self._issued(access)
        return access, refresh

    def issue_code(self, redirect_uri: str) -> str:
        """What the consent screen hands the user's browser: a one-time code for `redirect_uri`."""
        code = f"4/code-{uuid.uuid4().hex}"
        with self._lock:
            self._codes[code] = redirect_uri
        return code

    def fail_next(self, n: int = 1, *, status: int = 503, error: str | None = None) -> None:
        """The next `n` token requests fail: `error` (invalid_grant...) as a 400 JSON body, else `status`."""
        with self._lock:
            self._failures.extend([self._failure(status, error)] * n)

    def answer_next(self, status: int, body: dict[str, Any] | str) -> None:
        """The next token request gets exactly this answer (a gateway's page, a huge body...)."""
        with self._lock:
            self._failures.append((status, body))

    def fail_always(self, *, status: int = 503, error: str | None = None) -> None:
        """Every token request fails until `recover()`."""
        with self._lock:
            self._failing = self._failure(status, error)

    def hold(self) -> None:
        """Requests arriving from now on wait for `release()` before they are answered."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def recover(self) -> None:
        with self._lock:
            self._failing = None
            self._failures.clear()

    def revoke_all(self) -> None:
        """Every refresh token dies (the user revoked consent, or changed the password)."""
        with self._lock:
            self._refresh_tokens.clear()

    # -- server side (its own thread) ----------------------------------------------------------------

    @staticmethod
    def _failure(status: int, error: str | None) -> tuple[int, dict[str, Any] | str]:
        if error is not None:
            return 400, {"error": error, "error_description": f"{error}: Token has been expired or revoked."}
        return status, "Service Unavailable"

    def _new_pair(self) -> tuple[str, str]:
        serial = next(self._serial)
        access = f"ya29.access-{serial}-{uuid.uuid4().hex}"
        refresh = f"1//refresh-{serial}-{uuid.uuid4().hex}"
        self._refresh_tokens.add(refresh)
        self.access_token = access
        self.issued += [access, refresh]
        return access, refresh

    def _issued(self, access: str) -> None:
        if self.on_issue is not None:
            self.on_issue(access)

    def _client(self, form: dict[str, str], authorization: str | None) -> tuple[str | None, str | None]:
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return unquote(user), unquote(password)
        return form.get("client_id"), form.get("client_secret")

    def _answer(
        self, path: str, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any] | str]:
        if not self._open.is_set():
            self.waiting.release()
            self._open.wait(30)
        with self._lock:
            self.calls += 1
            self.requests.append(form)
            if path != "/token":
                return 404, "Not Found"
            failure = self._failures.pop(0) if self._failures else self._failing
            if failure is not None:
                return failure
            if self._client(form, authorization) != (self.client_id, self.client_secret):
                return 401, {"error": "invalid_client", "error_description": "Unauthorized client"}
            grant = form.get("grant_type")
            if grant == "authorization_code":
                expected = self._codes.pop(form.get("code", ""), None)  # a code works once
                if expected is None or expected != form.get("redirect_uri"):
                    return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
            elif grant == "refresh_token":
                old = form.get("refresh_token", "")
                if old not in self._refresh_tokens:
                    return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
                self._refresh_tokens.discard(old)  # rotated: the old one is dead
            else:
                return 400, {"error": "unsupported_grant_type"}
            access, refresh = self._new_pair()
        self._issued(access)
        return 200, {
            "access_token": access,
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": "https://mail.google.com/",
            "token_type": "Bearer",
        }
