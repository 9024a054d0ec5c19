"""The same asyncio Protocol on uvloop's event loop (libuv, written in C and Cython).

    python -m epollbook serve uvloop
"""

import sys

import uvloop

from epollbook.contenders.asyncio_protocol import start_serving
from epollbook.contenders.common import run_asyncio

if __name__ == "__main__":
    sys.exit(run_asyncio(start_serving, __doc__.split("\n", 1)[0], loop_factory=uvloop.new_event_loop))
