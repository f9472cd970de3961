"""`maxConnections` across nodes: an SMTP connection of a connection-capped account holds a lease row.

A provider counts an account's connections wherever they come from (Microsoft 365 answers a fourth one
with "432 4.3.2 … thread limit exceeded"), so on PostgreSQL, where several nodes send for one account, the
cap cannot be a count in one process. Each connection of a capped account takes one of the account's slots
0 … cap-1 (a row of `smtp_lease`, primary key (account, slot): two nodes taking one slot conflict, one
wins) before it connects and gives it back when it closes; a worker that dies loses its rows with its
heartbeat (queue.py `requeue_stalled`). SQLite serves one node, whose own count (the delivery worker's
lanes) is the whole count: no rows there.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gql_mail.queue import LEASE
from gql_mail.runtime import Runtime

# The slot of a connection whose cap this process's own count enforces (SQLite: one node).
LOCAL = -1


async def take(rt: Runtime, account_id: str, cap: int) -> int | None:
    """A free slot of the account's `cap`, now held by this worker; None when every slot is held (by
    connections on other nodes)."""
    if rt.db.is_sqlite:
        return LOCAL
    async with rt.db.write() as session:
        held = set(
            (await session.execute(select(LEASE.c.slot).where(LEASE.c.account_id == account_id))).scalars()
        )
        for slot in (s for s in range(cap) if s not in held):
            taken = (
                await session.execute(
                    pg_insert(LEASE)
                    .values(account_id=account_id, slot=slot, worker_id=rt.worker_id, taken_at=rt.clock.now())
                    .on_conflict_do_nothing()
                    .returning(LEASE.c.slot)
                )
            ).first()
            if taken is not None:
                return slot
    return None


async def give_back(rt: Runtime, account_id: str, slot: int) -> None:
    if slot == LOCAL:
        return
    async with rt.db.write() as session:
        await session.execute(
            delete(LEASE).where(
                LEASE.c.account_id == account_id, LEASE.c.slot == slot, LEASE.c.worker_id == rt.worker_id
            )
        )
