"""Batcher: one item the writer refuses fails neither its batch nor itself silently."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from gql_mail.workers.batcher import Batcher


class Poisoned(Exception):
    pass


class Store:
    """A writer that refuses any batch holding a poisoned item (as a database refuses the whole
    transaction), and an `on_item_failed` that may be told to fail as well."""

    def __init__(self, *, ending_fails: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.written: list[str] = []
        self.ended: list[tuple[str, Exception]] = []
        self.ending_fails = ending_fails

    async def write(self, items: Sequence[str]) -> None:
        self.batches.append(list(items))
        if any(item.startswith("poison") for item in items):
            raise Poisoned(f"refused {items}")
        self.written.extend(items)

    async def end(self, item: str, error: Exception) -> None:
        if self.ending_fails:
            raise RuntimeError("the database is gone")
        self.ended.append((item, error))


async def run(batcher: Batcher[str], items: list[str]) -> list[BaseException | None]:
    """Submit all items at once (they go in one batch) and return each future's exception."""
    futures = [batcher.submit(item) for item in items]
    await asyncio.wait(futures)
    return [future.exception() for future in futures]


@pytest.fixture
async def started() -> AsyncIterator[list[Batcher[str]]]:
    batchers: list[Batcher[str]] = []
    yield batchers
    for batcher in batchers:
        await batcher.stop()


def make(started: list[Batcher[str]], store: Store, *, ending: bool = True) -> Batcher[str]:
    batcher = Batcher(store.write, on_item_failed=store.end if ending else None)
    batcher.start()
    started.append(batcher)
    return batcher


async def test_a_good_batch_is_one_write(started: list[Batcher[str]]) -> None:
    store = Store()
    assert await run(make(started, store), ["a", "b", "c"]) == [None, None, None]
    assert store.batches == [["a", "b", "c"]]


async def test_one_refused_item_fails_neither_its_batch_nor_its_future(started: list[Batcher[str]]) -> None:
    store = Store()
    errors = await run(make(started, store), ["a", "poison", "b"])
    assert errors == [None, None, None], "the refused item was ended by on_item_failed"
    assert store.batches == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]
    assert store.written == ["a", "b"]
    assert [(item, type(error)) for item, error in store.ended] == [("poison", Poisoned)]
    assert "refused ['poison']" in str(store.ended[0][1]), "on_item_failed gets the error of the write alone"


async def test_a_lone_refused_item_is_not_written_twice(started: list[Batcher[str]]) -> None:
    store = Store()
    assert await run(make(started, store), ["poison"]) == [None]
    assert store.batches == [["poison"]]
    assert [item for item, _ in store.ended] == ["poison"]


async def test_the_future_gets_the_error_only_when_ending_fails_too(started: list[Batcher[str]]) -> None:
    store = Store(ending_fails=True)
    errors = await run(make(started, store), ["a", "poison"])
    assert errors[0] is None and isinstance(errors[1], Poisoned)
    assert store.written == ["a"]


async def test_without_on_item_failed_the_future_gets_the_error(started: list[Batcher[str]]) -> None:
    store = Store()
    errors = await run(make(started, store, ending=False), ["poison", "a", "poison2"])
    assert [type(e) if e else None for e in errors] == [Poisoned, None, Poisoned]
    assert store.written == ["a"] and store.ended == []


async def test_the_batcher_goes_on_after_a_refused_item(started: list[Batcher[str]]) -> None:
    store = Store()
    batcher = make(started, store)
    await run(batcher, ["poison", "a"])
    assert await run(batcher, ["b", "c"]) == [None, None]
    assert store.batches[-1] == ["b", "c"] and store.written == ["a", "b", "c"]
