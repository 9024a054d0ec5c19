"""uvloop's Protocol keeping the connection: each answer says "Connection: keep-alive" (chapter 11's second mode).

Every other server of the book answers HTTP/1.0 and closes, so a load
generator opens a new connection for each request. This one answers the
same bytes with one more header, ``Connection: keep-alive``, and waits for
the next request on the same connection: wrk then sends all of a
connection's requests on it, and the difference in CPU per request between
this server and ``uvloop`` is what a connection costs the server (accept,
registration, close, and the kernel's handshake and teardown). One request
at a time, as wrk sends them; bytes after a request's head (a pipelined
request) are judged as the next request.

    python -m epollbook serve uvloop-keep-alive
"""

import asyncio
import sys

import uvloop

from epollbook.contenders.common import run_asyncio
from epollbook.servers import framing


class KeepAliveProtocol(asyncio.Protocol):
    """One connection: answer each request whose head is complete, on the same connection; close on an error."""

    def connection_made(self, transport):
        self.transport = transport
        self.received = bytearray()

    def data_received(self, data):
        self.received += data
        while (verdict := framing.judge(self.received)) is not None:
            if verdict.answer is not framing.RESPONSE:  # 400 or 431: answer it, and close as the others do
                self.transport.write(verdict.answer)
                self.transport.close()
                return
            self.transport.write(framing.KEEP_ALIVE)
            self.received = bytearray(framing.after_head(self.received, verdict))  # the next request's beginning


def start_serving(listener):
    """Serve ``KeepAliveProtocol`` on *listener* from the running loop; return the ``asyncio.Server``."""
    return asyncio.get_running_loop().create_server(KeepAliveProtocol, sock=listener)


if __name__ == "__main__":
    sys.exit(run_asyncio(start_serving, __doc__.split("\n", 1)[0], loop_factory=uvloop.new_event_loop))
