"""The websocket quotas as a service rule: counted in all and per token, refusals say which limit."""

from __future__ import annotations

from gql_mail.config import Settings
from gql_mail.services.connection_quota import ConnectionQuota


def test_the_process_limit_refuses_past_it_and_frees_a_place_on_leave() -> None:
    quota = ConnectionQuota(max_open=2, max_per_token=10)
    assert quota.enter() is None and quota.enter() is None
    refusal = quota.enter()
    assert refusal is not None and "at most 2" in refusal
    assert quota.open == 2  # a refused connection is not counted
    quota.leave()
    assert quota.enter() is None


def test_the_token_limit_counts_each_token_apart() -> None:
    quota = ConnectionQuota(max_open=100, max_per_token=1)
    assert quota.claim("a") is None
    refusal = quota.claim("a")
    assert refusal == "at most 1 websocket connections per token"
    assert quota.claim("b") is None
    quota.release("a")
    assert "a" not in quota.per_token  # no entry left behind per token ever seen
    assert quota.claim("a") is None


def test_the_limits_come_from_the_settings() -> None:
    quota = ConnectionQuota.from_settings(Settings(max_ws_connections=7, max_ws_connections_per_token=3))
    assert (quota.max_open, quota.max_per_token) == (7, 3)
