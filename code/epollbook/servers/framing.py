"""HTTP framing for the corrected servers: where a request's head ends, whether it is HTTP, what to answer.

Pure functions of bytes, no sockets, so they are tested in-process and fast
(``tests/test_framing.py``). Every server of the book answers the article's
way: one request per connection, the same ``Hello, world!`` to every request
whose head is complete, and the connection closed afterwards (HTTP/1.0).

What the article's servers get wrong and this module answers:

- ``request.decode()`` raises ``UnicodeDecodeError`` on bytes that are not
  UTF-8, and HTTP allows such bytes in a field's value. Here a request stays
  bytes; ``printable(head)`` shows one without decoding anything that could fail.
- A request without an end grows ``requests[fileno]`` for ever. Here a head
  longer than ``max_head`` bytes gets ``431``, so a buffer never holds more
  than ``max_head`` plus one read.
- Whatever arrives is answered ``200``. Here a first line that is not an HTTP
  request line gets ``400``, as soon as that line is complete.
"""

import re
from typing import NamedTuple

RESPONSE = (b"HTTP/1.0 200 OK\r\nDate: Mon, 1 Jan 1996 01:01:01 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
            b"Hello, world!")
"""The article's answer, byte for byte."""

KEEP_ALIVE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n", 1)
"""The article's answer with the header that asks an HTTP/1.0 client to keep the connection (chapter 11's servers
that keep their connections, ``fast-keep-alive`` and ``uvloop-keep-alive``, answer it)."""

MAX_HEAD = 8192
"""The longest request head answered by default, in bytes (as many servers allow: nginx, Node.js)."""

# The article's test for the end of a head (EOL1 = b'\n\n', EOL2 = b'\n\r\n') finds an empty line
# however the lines end; this finds the same places, and where the head ends.
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")

# RFC 9112's request-line: a method (a token), one space, a target (visible ASCII), one space,
# HTTP/ and a version. Bytes outside ASCII are allowed in a field's value, never here.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?")

_REASONS = {200: "OK", 400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def error_response(status, explanation):
    """Return a whole HTTP/1.0 response with *status* (400, 408 or 431) and *explanation* as its text body."""
    body = explanation.encode("ascii", "backslashreplace") + b"\n"
    return (f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii") + body


NOT_HTTP = error_response(400, "This server speaks HTTP: a request starts with a line such as 'GET / HTTP/1.0'.")
TIMED_OUT = error_response(408, "The request did not arrive in time; the connection is closed.")


def too_long(max_head):
    """The ``431`` answer to a head longer than *max_head* bytes."""
    return error_response(431, f"The request's head is longer than this server's limit of {max_head} bytes.")


class Verdict(NamedTuple):
    """What to do with a request whose head is complete, or that cannot become one.

    ``answer`` is the whole response to send; ``head`` the request's head
    (without its empty line), ``b''`` if the request was refused before its end.
    """

    answer: bytes
    head: bytes


def judge(received, max_head=MAX_HEAD):
    """Judge the bytes *received* so far on a connection; return a ``Verdict``, or None to read more.

    A complete head whose first line is an HTTP request line gets the article's
    answer, whatever the method, target and fields (their bytes need not be
    UTF-8). A first line that is not a request line gets ``400`` as soon as it
    is complete; a head with no end within *max_head* bytes gets ``431``.
    Never raises on any bytes.
    """
    first_line_end = received.find(b"\n")
    if first_line_end >= 0 and not _REQUEST_LINE.fullmatch(received, 0, first_line_end):
        return Verdict(NOT_HTTP, b"")
    # An empty line after the first line ends the head (before it, the head would have no request line).
    end = _END_OF_HEAD.search(received, max(first_line_end - 1, 0)) if first_line_end >= 0 else None
    if end is not None and end.end() <= max_head:
        return Verdict(RESPONSE, bytes(received[:end.start()]))
    if len(received) > max_head:
        return Verdict(too_long(max_head), b"")
    return None


def after_head(received, verdict):
    """The bytes of *received* after the head *verdict* answered and its empty line (``b''`` if none).

    On a kept connection they are the beginning of the next request (a
    client may send it before it has the answer: pipelining). *verdict* must
    be the ``RESPONSE`` verdict ``judge(received)`` returned.
    """
    return bytes(received[_END_OF_HEAD.match(received, len(verdict.head)).end():])


def printable(head, most=2000):
    """Return *head* (bytes) as text safe to print: ASCII as it is, any other byte as ``\\xNN``, at most *most* chars.

    Control characters other than line ends are escaped too, so a request
    cannot move the terminal's cursor or change its colours.
    """
    text = "".join(
        chr(byte) if 0x20 <= byte < 0x7f or byte in (0x0a, 0x0d, 0x09) else f"\\x{byte:02x}"
        for byte in head[:most]
    ).replace("\r\n", "\n")
    return text if len(head) <= most else text + f"... ({len(head) - most} more bytes)"
