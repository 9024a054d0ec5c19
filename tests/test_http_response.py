"""How the checks read an HTTP response's bytes: strict where the standard is, free where it is free."""

import pytest

from epollbook.checks import CheckFailed
from epollbook.checks.http_response import media_type, read_response

pytestmark = pytest.mark.quick


@pytest.mark.parametrize("value, expected", [
    ("text/plain; charset=utf-8", ("text/plain", {"charset": "utf-8"})),
    ('text/plain;charset="UTF-8"', ("text/plain", {"charset": "UTF-8"})),
    ("Text/Plain ;CHARSET=utf8", ("text/plain", {"charset": "utf8"})),
    ("text/plain;", ("text/plain", {})),
    ("text/plain; format=flowed; charset=utf-8", ("text/plain", {"format": "flowed", "charset": "utf-8"})),
    ('text/plain; title="a \\"quoted\\" word"', ("text/plain", {"title": 'a "quoted" word'})),
])
def test_a_media_type_is_read_in_every_spelling_the_standard_allows(value, expected):
    assert media_type(value) == expected, f"{value!r} was read as {media_type(value)}"


@pytest.mark.parametrize("value", ["text/plain charset=utf-8", "text/plain; charset = utf-8", "plain", "",
                                   'text/plain; charset="utf-8'])
def test_a_malformed_media_type_is_none(value):
    assert media_type(value) is None, f"{value!r} was read as {media_type(value)}"


def test_a_response_is_split_into_status_line_fields_and_body():
    response = read_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nX-A:  1 \r\nx-a: 2\r\n\r\nhi\r\n\r\n", "it")
    assert response.status_line == "HTTP/1.0 200 OK"
    assert response.fields == {"content-length": ["2"], "x-a": ["1", "2"]}, response.fields
    assert response.body == b"hi\r\n\r\n"
    assert response.field("CONTENT-LENGTH") == "2" and response.field("Date") is None


@pytest.mark.parametrize("raw, words", [
    (b"HTTP/1.0 200 OK\nContent-Length: 2\n\nhi", "some end in a bare \\n"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\n\r\nhi", "some end in a bare \\n"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nhi", "end with an empty line"),
    (b"HTTP/1.0 200 OK\r\nContent-Length : 2\r\n\r\nhi", "'Name: value'"),
    (b"HTTP/1.0 200 OK\r\nX-Name: caf\xc3\xa9\r\n\r\nhi", "in ASCII"),
])
def test_a_malformed_response_gets_one_sentence_naming_the_fault(raw, words):
    with pytest.raises(CheckFailed) as failure:
        read_response(raw, "make_response('hi')")
    assert words in str(failure.value), failure.value


def test_one_field_given_twice_with_different_values_is_refused():
    response = read_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nhi", "it")
    with pytest.raises(CheckFailed, match="one Content-Length header"):
        response.field("Content-Length")
