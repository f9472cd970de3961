from __future__ import annotations

from pathlib import Path

import pytest

from gql_mail.crypto import DecryptionError, SecretBox, load_or_create_secret


def test_round_trip_and_nonce_uniqueness() -> None:
    box = SecretBox("s1")
    a, b = box.encrypt("hunter2"), box.encrypt("hunter2")
    assert a != b and "hunter2" not in a
    assert box.decrypt(a) == box.decrypt(b) == "hunter2"


def test_tampering_and_wrong_key_are_refused() -> None:
    box = SecretBox("s1")
    stored = box.encrypt("pw")
    prefix, kid, payload = stored.split(":", 2)
    flipped = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    with pytest.raises(DecryptionError):
        box.decrypt(f"{prefix}:{kid}:{flipped}")
    with pytest.raises(DecryptionError):
        SecretBox("other").decrypt(stored)


def test_rotation_reads_old_writes_new() -> None:
    old = SecretBox("old").encrypt("pw")
    rotating = SecretBox("new", "old")
    assert rotating.decrypt(old) == "pw"
    assert not rotating.is_current(old)
    assert rotating.is_current(rotating.encrypt("pw"))


def test_generated_secret_is_stable_and_private(tmp_path: Path) -> None:
    first, generated = load_or_create_secret(None, tmp_path)
    second, generated_again = load_or_create_secret(None, tmp_path)
    assert generated and not generated_again and first == second
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    assert load_or_create_secret("configured", tmp_path) == ("configured", False)
