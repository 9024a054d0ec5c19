"""fast keeping its connections: each answer says "Connection: keep-alive", and the next request comes on it.

Chapter 11's second mode for the book's own server, as ``uvloop-keep-alive``
is uvloop's: every other server of the book answers HTTP/1.0 and closes, so a
load generator opens a connection per request. This one answers the same
bytes with one more header (``framing.KEEP_ALIVE``) and reads the next
request on the same connection; wrk then sends all of a connection's requests
on it, and the difference in CPU per request from ``fast`` is what a
connection costs the server.

What changes from ``fast``, and why:

- A request's head may be followed by the beginning of the next request (a
  client may send it before it has the answer: pipelining). Those bytes are
  kept, and judged before anything more is read.
- After an answer the connection goes back to reading, with a new deadline
  for its next request's head, and is revisited at once without waiting for
  an event: edge-triggered, bytes that came with the request (already read,
  or still in the socket) make no new edge.
- A request that gets ``400`` or ``431`` is answered and closed, lingering,
  as ``fast`` does: after a request it cannot frame, the connection's next
  bytes mean nothing.

    python -m epollbook serve fast-keep-alive
"""

import sys

from epollbook.servers import framing
from epollbook.servers.fast import DONTWAIT, FastServer
from epollbook.servers.running import main
from epollbook.servers.skeleton import RECV_SIZE


class FastKeepAliveServer(FastServer):
    """``FastServer`` answering ``framing.KEEP_ALIVE`` and reading the next request on the same connection."""

    def _read_request(self, connection, mask):
        received = connection.received or b""  # what is left of the last read after the last request: the next one
        for _ in range(self.reads_per_event):
            verdict = framing.judge(received, self.limits.max_head) if received else None
            if verdict is not None:
                break
            try:
                chunk = connection.sock.recv(RECV_SIZE, DONTWAIT)
            except BlockingIOError:  # nothing more for now: keep what there is
                connection.received = received
                return
            except OSError:  # ECONNRESET, ETIMEDOUT: the connection is gone
                chunk = b""
            if not chunk:  # the client closed: between two requests, that is how a kept connection ends
                self._close(connection)
                return
            received += chunk
            self._set_deadline(connection, min(connection.request_deadline, self._now + self.limits.idle_timeout))
        else:  # the cap on reads: come back for the rest without waiting for an edge, which will not come
            connection.received = received
            self.not_drained(connection.fd)
            return
        if self.show_requests and verdict.head:
            print("-" * 40 + "\n" + framing.printable(verdict.head), flush=True)
        if verdict.answer is framing.RESPONSE:
            connection.received = framing.after_head(received, verdict)
            self._answer(connection, framing.KEEP_ALIVE, mask)
        else:  # 400 or 431: answer, and close as fast does
            connection.received = None  # no next request on this connection
            self._answer(connection, verdict.answer, mask)

    def _after_answer(self, connection, mask):
        if connection.received is None:  # it was an error's answer
            self._linger(connection, mask)
            return
        connection.step = self._read_request
        connection.request_deadline = self._now + self.limits.request_timeout  # the next request's whole head
        self._set_deadline(connection, min(connection.request_deadline, self._now + self.limits.idle_timeout))
        self.not_drained(connection.fd)  # what came with the request makes no new edge: look now

    def _time_out(self, connection):
        if connection.step == self._read_request and not connection.received:
            self._close(connection)  # idle between two requests: a kept connection ends so, without a word
        else:
            super()._time_out(connection)

if __name__ == "__main__":
    sys.exit(main(FastKeepAliveServer))
