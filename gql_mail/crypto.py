"""Encryption of secrets at rest (mailbox passwords, OAuth tokens, webhook secrets).

AES-256-GCM (authenticated) with a key derived from `GQL_MAIL_SECRET` by HKDF-SHA256. A stored value is
`v1:<key id>:<base64(nonce || ciphertext)>`; the key id lets `gql-mail rotate-secret` re-encrypt with a
new secret while still reading values written under the old one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1"


class DecryptionError(Exception):
    """A stored secret was written under a key we do not have, or was tampered with."""


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"gql-mail", info=b"secrets-at-rest").derive(
        secret.encode()
    )


def key_id(secret: str) -> str:
    return hashlib.sha256(b"gql-mail-key-id" + secret.encode()).hexdigest()[:8]


class SecretBox:
    """Encrypts with the current secret; decrypts with it or any older one it was given."""

    def __init__(self, secret: str, *old_secrets: str) -> None:
        self._current = key_id(secret)
        self._keys = {key_id(s): AESGCM(_derive(s)) for s in (secret, *old_secrets)}

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext.encode(), self._current.encode())
        return f"{PREFIX}:{self._current}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str) -> str:
        try:
            prefix, kid, payload = stored.split(":", 2)
        except ValueError as exc:
            raise DecryptionError("not an encrypted value") from exc
        aead = self._keys.get(kid)
        if prefix != PREFIX or aead is None:
            raise DecryptionError(f"no key for key id {kid}")
        raw = base64.b64decode(payload)
        try:
            return aead.decrypt(raw[:12], raw[12:], kid.encode()).decode()
        except InvalidTag as exc:
            raise DecryptionError("secret failed authentication") from exc

    def is_current(self, stored: str) -> bool:
        return stored.split(":", 2)[1:2] == [self._current]

    def maybe_encrypt(self, plaintext: str | None) -> str | None:
        return None if plaintext is None else self.encrypt(plaintext)

    def maybe_decrypt(self, stored: str | None) -> str | None:
        return None if stored is None else self.decrypt(stored)


def load_or_create_secret(configured: str | None, data_dir: Path) -> tuple[str, bool]:
    """The configured secret, else one generated once into the data dir. Returns (secret, generated_now)."""
    if configured:
        return configured, False
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret, True
