"""An asyncio Protocol on the standard event loop: data_received() judges the request, answers, closes.

    python -m epollbook serve asyncio-protocol
"""

import asyncio
import sys

from epollbook.contenders.common import run_asyncio
from epollbook.servers import framing


class HelloProtocol(asyncio.Protocol):
    """One connection: collect its bytes until ``framing.judge`` has a verdict, send the answer, close."""

    def connection_made(self, transport):
        self.transport = transport
        self.received = bytearray()

    def data_received(self, data):
        self.received += data
        verdict = framing.judge(self.received)
        if verdict is not None:
            self.transport.write(verdict.answer)
            self.transport.close()  # after the answer is written: close() flushes the transport's buffer first


def start_serving(listener):
    """Serve ``HelloProtocol`` on *listener* from the running loop; return the ``asyncio.Server``."""
    return asyncio.get_running_loop().create_server(HelloProtocol, sock=listener)


if __name__ == "__main__":
    sys.exit(run_asyncio(start_serving, __doc__.split("\n", 1)[0]))
