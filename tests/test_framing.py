"""The corrected servers' HTTP framing (servers/framing.py): where a head ends, what is HTTP, what is answered."""

import pytest

from epollbook.clients import FIRST_LINE, REQUEST, non_utf8_request
from epollbook.servers import framing

pytestmark = pytest.mark.quick


@pytest.mark.parametrize("request_bytes", [
    pytest.param(REQUEST, id="CRLF line ends"),
    pytest.param(b"GET / HTTP/1.0\n\n", id="bare LF, as the article's EOL1 allows"),
    pytest.param(b"GET / HTTP/1.0\nHost: x\n\r\n", id="the article's EOL2"),
    pytest.param(non_utf8_request, id="field bytes that are not UTF-8"),
    pytest.param(b"POST /form?a=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", id="a body after the head"),
])
def test_a_complete_head_gets_the_articles_answer_and_is_returned_without_its_end(request_bytes):
    verdict = framing.judge(bytearray(request_bytes))
    assert verdict is not None and verdict.answer == framing.RESPONSE, f"{request_bytes!r} got {verdict}"
    assert request_bytes.startswith(verdict.head) and not verdict.head.endswith(b"\n"), \
        f"the head of {request_bytes!r} was taken as {verdict.head!r}"


@pytest.mark.parametrize("so_far", [b"", b"GE", FIRST_LINE, FIRST_LINE + b"Host: x\r\n", FIRST_LINE + b"Host: x\r\n\r"])
def test_an_unfinished_request_asks_for_more(so_far):
    assert framing.judge(bytearray(so_far)) is None, f"{so_far!r} was judged before its end"


@pytest.mark.parametrize("first_line", [
    b"hello\r\n", b"\r\n", b"GET /\r\n", b"GET / HTTP/1.0 extra\r\n", b"GET /caf\xc3\xa9 HTTP/1.0\r\n",
    b"\x16\x03\x01\x02\x00\n", b"GET  / HTTP/1.0\r\n", b"GET / HTTP/one\r\n",
])
def test_a_first_line_that_is_no_request_line_gets_400_as_soon_as_it_is_complete(first_line):
    verdict = framing.judge(bytearray(first_line))
    assert verdict is not None and verdict.answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), \
        f"{first_line!r} got {verdict}"


def test_a_head_longer_than_the_limit_gets_431_and_one_just_within_it_the_answer():
    limit = 100
    filler = b"X: " + b"x" * (limit - len(FIRST_LINE) - 7) + b"\r\n"
    within = FIRST_LINE + filler + b"\r\n"
    assert len(within) == limit
    assert framing.judge(bytearray(within), limit).answer == framing.RESPONSE, "a head of exactly the limit refused"
    endless = FIRST_LINE + b"X: " + b"x" * limit
    verdict = framing.judge(bytearray(endless), limit)
    assert verdict is not None and verdict.answer.startswith(b"HTTP/1.0 431 "), f"{len(endless)} bytes got {verdict}"
    assert b"limit of 100 bytes" in verdict.answer, verdict.answer
    assert framing.judge(bytearray(within + b"x" * limit), limit).answer == framing.RESPONSE, \
        "bytes after a complete head made it too long"


@pytest.mark.parametrize("status", [400, 408, 431])
def test_an_error_response_is_whole_http_with_a_length_that_matches_its_body(status):
    response = framing.error_response(status, "Why, in one sentence.")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.0 {status} ".encode()), head
    assert f"Content-Length: {len(body)}".encode() in head and body == b"Why, in one sentence.\n", response


def test_printable_escapes_every_byte_that_is_not_plain_ascii_and_never_raises():
    text = framing.printable(non_utf8_request + b"\x1b[31m")
    assert "caf\\xe9 \\xff\\xfe" in text and "\\x1b[31m" in text and "\r" not in text, text
    assert framing.printable(bytes(range(256))).isascii()
    assert framing.printable(b"x" * 5000, most=10) == "x" * 10 + "... (4990 more bytes)"
