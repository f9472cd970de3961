"""DataLoaders for per-message history: a listing of N messages that asks for their attempts costs one query
for all of them, not N. Built per context, and uncached, so a websocket connection that runs many
operations with one context never answers from an earlier operation's rows; batching is what matters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strawberry.dataloader import DataLoader

from gql_mail.runtime import Runtime
from gql_mail.services import history


@dataclass
class Loaders:
    attempts: DataLoader[str, list[history.Attempt]]
    deliveries: DataLoader[str, list[history.Delivery]]


def build_loaders(rt: Runtime) -> Loaders:
    async def attempts(keys: Sequence[str]) -> list[list[history.Attempt]]:
        found = await history.attempts_of(rt, keys)
        return [found[k] for k in keys]

    async def deliveries(keys: Sequence[str]) -> list[list[history.Delivery]]:
        found = await history.deliveries_of(rt, keys)
        return [found[k] for k in keys]

    return Loaders(
        attempts=DataLoader(load_fn=attempts, cache=False),
        deliveries=DataLoader(load_fn=deliveries, cache=False),
    )
