"""Group commit: concurrent writers share one `write_batch`, and each answer waits for its own commit.

The unit tests drive `GroupCommit` with a real asyncio `write_batch` that records every batch and can be
held on an `asyncio.Event`, so callers pile up behind a write exactly as submissions do behind a busy
database. The last test submits through the real server.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import pytest

from gql_mail.group_commit import GroupCommit
from tests.conftest import account_input, register_connected
from tests.harness import Server
from tests.servers.smtp import SmtpServer


class Recorder:
    """A write_batch that records each batch it is called with and commits it once allowed to.

    Batches whose number (0, 1, ...) is in `held` wait until `release(number)`; `started(number)` is set
    when that batch begins. `committed` holds every item whose batch finished, in commit order; `poison`
    items make their batch raise (so the group retries them alone)."""

    def __init__(self, *, held: Collection[int] = (), poison: Collection[Any] = ()) -> None:
        self.batches: list[list[Any]] = []
        self.leaders: list[asyncio.Task[Any] | None] = []  # the task that ran each batch
        self.committed: list[Any] = []
        self.held = set(held)
        self.poison = set(poison)
        self._gates: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._started: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def release(self, number: int) -> None:
        self._gates[number].set()

    async def started(self, number: int) -> None:
        await asyncio.wait_for(self._started[number].wait(), 2)

    async def __call__(self, items: Sequence[Any]) -> None:
        number = len(self.batches)
        self.batches.append(list(items))
        self.leaders.append(asyncio.current_task())
        self._started[number].set()
        if number in self.held:
            await self._gates[number].wait()
        bad = [item for item in items if item in self.poison]
        if bad:
            raise ValueError(f"refused {bad}")
        self.committed.extend(items)


async def wait_until(predicate: Any) -> None:
    """Let the loop run until predicate() holds (a few turns at most here); fail after two seconds."""
    async with asyncio.timeout(2):
        while not predicate():  # noqa: ASYNC110 (the group's own state; nothing to wait on)
            await asyncio.sleep(0)


async def second_batch_held() -> tuple[GroupCommit[int], Recorder, list[asyncio.Task[None]]]:
    """Item 0 is written alone while 1, 2 and 3 queue behind it; then 1, 2, 3 are one batch, held."""
    group: GroupCommit[int] = GroupCommit()
    record = Recorder(held={0, 1})
    first = asyncio.create_task(group.write(0, record))
    await record.started(0)
    waiting = [asyncio.create_task(group.write(i, record)) for i in (1, 2, 3)]
    await wait_until(lambda: len(group._waiting) == 3)
    record.release(0)
    await asyncio.wait_for(first, 2)
    await record.started(1)
    assert sorted(record.batches[1]) == [1, 2, 3]
    return group, record, waiting


async def test_callers_arriving_during_a_write_share_the_next_batch() -> None:
    group: GroupCommit[int] = GroupCommit()
    record = Recorder(held={0})
    returned_after_commit: dict[int, bool] = {}

    async def caller(item: int) -> None:
        await group.write(item, record)
        returned_after_commit[item] = item in record.committed

    first = asyncio.create_task(caller(0))
    await record.started(0)
    others = [asyncio.create_task(caller(i)) for i in range(1, 20)]
    # Every other caller is queued behind the held write, and none of them has returned.
    await wait_until(lambda: len(group._waiting) == 19)
    assert record.batches == [[0]]
    assert not any(task.done() for task in [first, *others])

    record.release(0)
    async with asyncio.timeout(2):
        await asyncio.gather(first, *others)

    assert len(record.batches) == 2, record.batches
    assert record.batches[0] == [0]
    assert len(record.batches[1]) == 19 and sorted(record.batches[1]) == list(range(1, 20))
    assert sorted(record.committed) == list(range(20))  # each item written exactly once
    assert returned_after_commit == {i: True for i in range(20)}


async def test_second_batch_callers_do_not_return_before_their_batch_commits() -> None:
    group, record, second = await second_batch_held()
    # The first batch committed while the second one is held: its callers must still be waiting.
    assert not any(task.done() for task in second)

    record.release(1)
    async with asyncio.timeout(2):
        await asyncio.gather(*second)
    assert sorted(record.committed) == [0, 1, 2, 3]


async def test_a_poison_item_fails_only_its_own_caller() -> None:
    group: GroupCommit[str] = GroupCommit()
    record = Recorder(held={0}, poison={"bad"})
    first = asyncio.create_task(group.write("lead", record))
    await record.started(0)
    items = ["a", "b", "bad", "c", "d"]
    tasks = [asyncio.create_task(group.write(item, record)) for item in items]
    await wait_until(lambda: len(group._waiting) == len(items))
    record.release(0)
    async with asyncio.timeout(2):
        results = await asyncio.gather(first, *tasks, return_exceptions=True)

    outcome = dict(zip(["lead", *items], results, strict=True))
    assert isinstance(outcome.pop("bad"), ValueError)
    assert outcome == {"lead": None, "a": None, "b": None, "c": None, "d": None}
    assert sorted(record.committed) == ["a", "b", "c", "d", "lead"]
    # The batch with the bad item was refused as a whole, then each item was written alone.
    assert sorted(record.batches[1]) == sorted(items)
    assert sorted(record.batches[2:]) == sorted([item] for item in items)


async def test_a_lone_poison_item_raises_its_own_error() -> None:
    group: GroupCommit[str] = GroupCommit()
    record = Recorder(poison={"bad"})
    with pytest.raises(ValueError, match="bad"):
        await asyncio.wait_for(group.write("bad", record), 2)
    assert record.batches == [["bad"]]  # not retried: it was alone
    await asyncio.wait_for(group.write("good", record), 2)  # and the group is free again
    assert record.committed == ["good"]


async def test_a_lone_write_is_written_at_once() -> None:
    group: GroupCommit[str] = GroupCommit()
    record = Recorder()
    await asyncio.wait_for(group.write("only", record), 2)
    assert record.batches == [["only"]]
    assert record.committed == ["only"]
    # Nothing is left behind: a later lone write is again one batch of one.
    await asyncio.wait_for(group.write("next", record), 2)
    assert record.batches == [["only"], ["next"]]


async def test_cancelling_a_lone_leader_mid_write_hands_over_to_the_waiting_callers() -> None:
    group: GroupCommit[int] = GroupCommit()
    record = Recorder(held={0})
    leader = asyncio.create_task(group.write(0, record))
    await record.started(0)
    others = [asyncio.create_task(group.write(i, record)) for i in (1, 2, 3)]
    await wait_until(lambda: len(group._waiting) == 3)

    leader.cancel()
    async with asyncio.timeout(2):
        results = await asyncio.gather(*others, return_exceptions=True)
    with pytest.raises(asyncio.CancelledError):
        await leader
    # They were not in the cancelled batch, so one of them leads the next write and they all succeed.
    assert results == [None, None, None]
    assert sorted(record.committed) == [1, 2, 3]
    assert 0 not in record.committed
    await asyncio.wait_for(group.write(4, record), 2)
    assert record.batches[-1] == [4]


async def test_cancelling_a_leader_mid_write_fails_its_batch_and_frees_the_group() -> None:
    group, record, batch = await second_batch_held()
    # The first write committed; one of 1, 2, 3 leads the second write, which is held.
    late = asyncio.create_task(group.write(4, record))  # arrives during the held second write
    await wait_until(lambda: len(group._waiting) == 1)

    leader = record.leaders[1]
    assert leader in batch
    leader.cancel()
    async with asyncio.timeout(2):
        results = await asyncio.gather(*batch, return_exceptions=True)
    # The leader is cancelled; the others of its batch learn that the outcome is unknown (no hang).
    for task, result in zip(batch, results, strict=True):
        if task is leader:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert isinstance(result, RuntimeError), result
    # The caller that arrived meanwhile leads the next write, and the group keeps working.
    await asyncio.wait_for(late, 2)
    await asyncio.wait_for(group.write(5, record), 2)
    assert record.committed == [0, 4, 5]
    assert record.batches[2:] == [[4], [5]]


async def test_a_caller_cancelled_right_after_being_chosen_to_lead_does_not_stall_the_group() -> None:
    group: GroupCommit[int] = GroupCommit()
    record = Recorder(held={0})
    first = asyncio.create_task(group.write(0, record))
    await record.started(0)
    chosen = asyncio.create_task(group.write(1, record))
    await wait_until(lambda: len(group._waiting) == 1)
    behind = asyncio.create_task(group.write(2, record))
    await wait_until(lambda: len(group._waiting) == 2)

    # Releasing the first write wakes its leader; in the same loop turn, right after its hand-over
    # picked `chosen`, `chosen` is cancelled (a client going away, a timeout around the request, shutdown).
    record.release(0)
    asyncio.get_running_loop().call_soon(chosen.cancel)
    await asyncio.wait_for(first, 2)
    with pytest.raises(asyncio.CancelledError):
        await chosen
    # `behind` must still be written, and so must a later write.
    try:
        await asyncio.wait_for(behind, 0.5)  # it would be written at once; it hangs instead
        await asyncio.wait_for(group.write(3, record), 0.5)
    finally:
        behind.cancel()
    assert 2 in record.committed and 3 in record.committed


SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId messageId response }
}"""
OUTBOX = """
query Outbox($account: ID) { outbox(account: $account, limit: 1000) { queueId account messageId } }"""
MESSAGE = "query M($q: ID!) { message(queueId: $q) { queueId account messageId envelope { to } } }"


async def test_concurrent_submissions_each_get_a_durable_distinct_message(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("grp", smtp_server))
    inputs = [{"to": [{"address": f"r{i}@example.org"}], "subject": f"s{i}", "text": "hi"} for i in range(30)]
    async with asyncio.timeout(15):
        answers = await asyncio.gather(
            *(server.gql(SUBMIT, {"account": "grp", "input": message}) for message in inputs)
        )
    submitted = [answer["submitMessage"] for answer in answers]
    queue_ids = [s["queueId"] for s in submitted]
    assert len(set(queue_ids)) == 30, queue_ids
    assert all(s["response"] == "Queued for delivery" for s in submitted)

    listed = (await server.gql(OUTBOX, {"account": "grp"}))["outbox"]
    by_id = {row["queueId"]: row for row in listed}
    assert set(queue_ids) <= set(by_id)
    async with asyncio.timeout(15):
        found = await asyncio.gather(*(server.gql(MESSAGE, {"q": q}) for q in queue_ids))
    for i, (answer, result) in enumerate(zip(submitted, found, strict=True)):
        message = result["message"]
        assert message["queueId"] == answer["queueId"]
        assert message["messageId"] == answer["messageId"] == by_id[answer["queueId"]]["messageId"]
        assert message["account"] == "grp"
        assert message["envelope"]["to"] == [f"r{i}@example.org"]
