"""Error reasons from response bodies: short, readable, and without secrets."""

from __future__ import annotations

import httpx
import pytest

from syncd.http import detail, failure_reason
from syncd.http.responses import MAX_DETAIL_CHARS


def response(status: int, content: bytes) -> httpx.Response:
    return httpx.Response(status, content=content)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"detail": "tag value too long"}', "tag value too long"),
        (b'{"message": "no", "detail": "detail first"}', "detail first"),
        (b'{"error": {"code": "Throttled"}}', '{"code":"Throttled"}'),
        (b'{"errors": ["a", "b"]}', '["a","b"]'),
        (b'{"other": 1}', '{"other":1}'),
        (b'"just a string"', "just a string"),
        (b"<html>\n  Bad   Gateway\n</html>", "<html> Bad Gateway </html>"),
        (b"", ""),
    ],
)
def test_detail_picks_the_readable_part(content: bytes, expected: str) -> None:
    assert detail(response(400, content)) == expected


def test_detail_is_cut_short() -> None:
    assert len(detail(response(500, b"x" * 5000))) == MAX_DETAIL_CHARS
    assert len(detail(response(500, b'{"detail": "' + b"y" * 5000 + b'"}'))) == MAX_DETAIL_CHARS


def test_every_secret_is_masked_raw_and_json_escaped() -> None:
    # A bearer token may hold a quote or a backslash, escaped inside a JSON string.
    quoted = 'tok"en\\42'
    content = b'{"detail": "Authorization: Bearer tok\\"en\\\\42; secret=client-SECRET-7"}'
    text = detail(response(400, content), [quoted, "client-SECRET-7", ""])
    assert text == "Authorization: Bearer **********; secret=**********"
    raw = detail(response(400, b"echo: client-SECRET-7"), ["client-SECRET-7"])
    assert raw == "echo: **********"


def test_masking_happens_before_the_cut() -> None:
    secret = "sk-long-secret-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    content = b"x" * (MAX_DETAIL_CHARS - 4) + b" " + secret.encode()
    text = detail(response(400, content), [secret])
    assert text.endswith(" ***")
    assert "sk-l" not in text


def test_failure_reason_names_the_status() -> None:
    assert failure_reason(response(422, b'{"detail": "bad tag"}')) == "HTTP 422: bad tag"
    assert failure_reason(response(502, b"")) == "HTTP 502"
    assert failure_reason(response(401, b"key sk-1"), ["sk-1"]) == "HTTP 401: key **********"
