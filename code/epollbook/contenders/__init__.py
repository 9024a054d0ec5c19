"""The servers the book's own are measured against: what a Python programmer would pick instead of raw epoll.

Each serves the article's answer the way the book's servers do (the same
bytes, from ``servers/framing.py``: read the request to its empty line,
answer, close) and nothing more: no timeouts, no lingering close, no limit
on connections. They are yardsticks for chapter 11's throughput, not models.

    python -m epollbook serve selectors          # selectors.DefaultSelector (epoll, level-triggered, on Linux)
    python -m epollbook serve asyncio-protocol   # an asyncio Protocol on the standard loop
    python -m epollbook serve asyncio-streams    # asyncio's streams: async def, await reader.read()
    python -m epollbook serve uvloop             # the same Protocol on uvloop's loop (libuv, in C)

``common.py`` holds what they share: the command line, the listening socket,
and the clean stop on SIGINT or SIGTERM.
"""
