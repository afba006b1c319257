"""The bounded JSON decoder every outside body goes through (bus, API, WebSocket)."""

import json

import pytest

from waybill.jsonlimits import JSONRefused, loads


@pytest.mark.parametrize("body, reason", [
    (b"[" * 200_000, "nested deeper"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
    (b'{"payload": {"note": "a\\u0000b"}}', "NUL"),
    (b'{"\\u0000": 1}', "NUL"),
    (b'{"note": "\\ud800"}', "lone surrogate"),
    (b"\x00", "malformed JSON"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b"{", "malformed JSON"),
    (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # a lone surrogate, encoded
    ('{"a": "\\u0000"}'.encode("utf-16-le"), "malformed JSON"),  # no BOM: NULs between the characters
    ('{"a": "\\u0000"}'.encode("utf-16"), "not UTF-8"),
])
def test_what_json_loads_would_let_through_or_crash_on_is_refused_with_a_reason(body, reason):
    with pytest.raises(JSONRefused) as refused:
        loads(body, max_depth=32)
    assert reason in refused.value.reason
    assert not refused.value.too_large
    assert isinstance(refused.value, ValueError)


def test_a_body_over_the_size_limit_is_refused_before_it_is_parsed():
    with pytest.raises(JSONRefused) as refused:
        loads(b'"' + b"x" * 2000 + b'"', max_bytes=1000)
    assert refused.value.too_large
    assert "2002 bytes" in refused.value.reason


def test_ordinary_json_decodes_as_json_loads_does():
    value = {"id": "x", "payload": {"lines": [{"sku": "KETTLE-1", "quantity": 2}], "name": "Caf\u00e9 \u2615"}}
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value).encode()):
        assert loads(text, max_depth=32) == value


def test_depth_is_counted_exactly():
    assert loads("[" * 32 + "]" * 32, max_depth=32) is not None
    with pytest.raises(JSONRefused):
        loads("[" * 33 + "]" * 33, max_depth=32)
    # Brackets inside strings are text, not nesting.
    assert loads(json.dumps({"a": "[" * 100}), max_depth=2) == {"a": "[" * 100}


@pytest.mark.parametrize("body", [b'{"price": NaN}', b"[Infinity]", b'{"a": -Infinity}', b'{"a": 1e999}'])
def test_numbers_that_are_not_json_are_refused_as_jsonb_would(body):
    with pytest.raises(JSONRefused, match="JSON number|infinity"):
        loads(body)
    assert loads(b'{"a": 1.5e300}') == {"a": 1.5e300}
