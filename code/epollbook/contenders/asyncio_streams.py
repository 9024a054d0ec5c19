"""asyncio's streams: one coroutine per connection awaits the request, writes the answer, closes.

    python -m epollbook serve asyncio-streams
"""

import asyncio
import sys

from epollbook.contenders.common import run_asyncio
from epollbook.servers import framing


async def answer(reader, writer):
    """Read from *reader* until ``framing.judge`` has a verdict, write the answer to *writer*, close it."""
    received = bytearray()
    try:
        while (verdict := framing.judge(received)) is None:
            chunk = await reader.read(4096)
            if not chunk:  # the client left before its request was complete
                return
            received += chunk
        writer.write(verdict.answer)
        await writer.drain()
    except ConnectionError:  # a reset: the client has gone
        pass
    except asyncio.CancelledError:  # the server stops; on 3.11 a cancelled handler's callback prints a traceback
        pass
    finally:
        writer.close()


def start_serving(listener):
    """Serve ``answer`` on *listener* from the running loop; return the ``asyncio.Server``."""
    return asyncio.start_server(answer, sock=listener)


if __name__ == "__main__":
    sys.exit(run_asyncio(start_serving, __doc__.split("\n", 1)[0]))
