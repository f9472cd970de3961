"""gql_mail/malloc_tuning.py: callable on any platform; on glibc the thresholds are taken."""

from __future__ import annotations

import asyncio
import ctypes.util
import platform

import pytest

from gql_mail import malloc_tuning
from gql_mail.malloc_tuning import release_free_memory, tune_malloc


def test_tune_malloc_sets_the_thresholds_on_glibc() -> None:
    done = tune_malloc()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert done
    else:
        assert ctypes.util.find_library("c") is None or done in (True, False)


def test_release_free_memory_is_callable_anywhere() -> None:
    assert release_free_memory() in (True, False)


async def test_release_after_runs_once_for_big_messages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small messages ask for nothing; several big ones in a row get one release, after the delay."""
    calls: list[int] = []

    def release() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(malloc_tuning, "RELEASE_DELAY", 0.0)
    monkeypatch.setattr(malloc_tuning, "release_free_memory", release)
    malloc_tuning.release_after(malloc_tuning.BIG_MESSAGE - 1)
    assert not malloc_tuning._pending
    malloc_tuning.release_after(malloc_tuning.BIG_MESSAGE)
    malloc_tuning.release_after(malloc_tuning.BIG_MESSAGE * 10)
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == [1]
    assert not malloc_tuning._pending
