"""The nesting scan that runs before any JSON is parsed: exact at the limit, blind to brackets in strings."""

from __future__ import annotations

import json

import pytest

from gql_mail.http_edge.json_body import MalformedJson, decode, too_deep


def test_depth_is_exact_at_the_limit() -> None:
    for limit in (1, 4, 64):
        assert not too_deep(b"[" * limit + b"]" * limit, limit)
        assert too_deep(b"[" * (limit + 1) + b"]" * (limit + 1), limit)
        mixed = b'{"a":' * limit + b"[]" + b"}" * limit
        assert too_deep(mixed, limit) and not too_deep(mixed, limit + 1)


def test_wide_is_not_deep() -> None:
    assert not too_deep(b"[" + b"[[]]," * 10_000 + b"[]]", 3)


def test_brackets_in_strings_do_not_count() -> None:
    text = json.dumps({"a": "[[[[{{{{", "b": ['"]]]]\\"[[[[', "\\"], "c": '\\"[[['}).encode()
    assert not too_deep(text, 2)
    assert too_deep(json.dumps({"a": "[[[[", "b": [[[1]]]}).encode(), 3)


def test_decode_refuses_with_a_reason() -> None:
    assert decode('{"a": [1, {"b": null}]}', 3) == {"a": [1, {"b": None}]}
    with pytest.raises(MalformedJson, match="deeper than 2"):
        decode("[[[1]]]", 2)
    for bad in (b"{", b'{"a": "\xff"}', b"[1,]", b"NaN", b'"\\ud800"'):
        with pytest.raises(json.JSONDecodeError, match="invalid JSON"):
            decode(bad, 10)
