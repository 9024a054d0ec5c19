"""An HTTP response's bytes, read strictly, so a check can say what is wrong with them.

Lenient clients (``http.client``, curl, browsers) accept lines that end in a
bare ``\\n`` and status lines that are not what the exercise asked for. A check
reads the raw bytes as the standard writes them (RFC 9112 for the message,
RFC 9110 for the fields), so that it can name the mistake; it then lets real
clients read the same bytes too.

What is free is left free: header names are case-insensitive, their order is
free, extra headers are allowed, and a parameter value may be a token or a
quoted string (``charset=utf-8`` and ``charset="UTF-8"`` are the same).
"""

import dataclasses
import re

from epollbook.checks.harness import CheckFailed, short

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_FIELD_LINE = re.compile(rf"({_TOKEN}):[ \t]*(.*?)[ \t]*")
# RFC 9110: parameters = *( OWS ";" OWS [ parameter ] ), so an empty one ("text/plain;") is allowed.
_PARAMETER = re.compile(rf'[ \t]*;[ \t]*(?:({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*"))?')

# The labels every browser decodes as UTF-8 (the WHATWG Encoding Standard), in lower case.
UTF8_LABELS = {"utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"}


@dataclasses.dataclass
class Response:
    status_line: str
    fields: dict     # lower-case name -> [values, in order]
    body: bytes

    def field(self, name):
        """The one value of field *name*, or None; ``CheckFailed`` if it is given twice with different values."""
        values = self.fields.get(name.lower(), [])
        if len(set(values)) > 1:
            raise CheckFailed(f"expected one {name} header; the response has {len(values)}: "
                              + ", ".join(short(value) for value in values))
        return values[0] if values else None


def read_response(raw, asked_for):
    """Split the bytes *raw* of a response into status line, header fields and body.

    *asked_for* names the call that made it, for the messages. Raises
    ``CheckFailed`` naming the first thing that breaks the message format.
    """
    head, blank, body = raw.partition(b"\r\n\r\n")
    if not blank:
        if b"\n\n" in raw or b"\n\r\n" in raw:
            raise CheckFailed(f"expected every line of the head of {asked_for} to end in \\r\\n, as HTTP requires; "
                              "some end in a bare \\n (lenient clients forgive it, the standard does not)")
        raise CheckFailed(f"expected the head of {asked_for} to end with an empty line (\\r\\n\\r\\n) before the body; "
                          f"there is none in {short(raw)}")
    if b"\n" in head.replace(b"\r\n", b""):
        raise CheckFailed(f"expected every line of the head of {asked_for} to end in \\r\\n, as HTTP requires; "
                          "some end in a bare \\n (lenient clients forgive it, the standard does not)")
    try:
        lines = head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise CheckFailed(f"expected the head of {asked_for} in ASCII, as HTTP requires; it holds other bytes: "
                          f"{short(head)}") from None
    fields = {}
    for line in lines[1:]:
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            raise CheckFailed(f"expected each header line of {asked_for} to read 'Name: value'; "
                              f"this one does not: {short(line)}")
        fields.setdefault(match[1].lower(), []).append(match[2])
    return Response(lines[0], fields, body)


def media_type(value):
    """``(type/subtype in lower case, {parameter name in lower case: value unquoted})`` of a Content-Type value.

    Returns None if *value* is not a media type with well-formed parameters.
    """
    match = re.match(rf"[ \t]*({_TOKEN}/{_TOKEN})", value)
    if match is None:
        return None
    parameters, rest = {}, value[match.end():]
    while rest.strip():
        parameter = _PARAMETER.match(rest)
        if parameter is None:
            return None
        rest = rest[parameter.end():]
        if parameter[1] is None:
            continue
        name, text = parameter[1].lower(), parameter[2]
        if text.startswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        parameters[name] = text
    return match[1].lower(), parameters
