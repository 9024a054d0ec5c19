"""A tiny event loop in three steps, the bridge from chapter 5's epoll loop to ``async def`` (chapter 12).

Each step is a complete server of the article's answer on ``selectors``, and
changes one idea from the step before, as the asyncio crawler of "500 Lines
or Less" does:

1. ``callbacks``: the loop calls a function when a socket is ready; a
   connection's state lives in the closures that call each other.
2. ``generators``: a connection is one generator that *yields* the socket and
   the event it waits for; the loop resumes it when that comes. The state is
   back in local variables, the code reads top to bottom again.
3. ``coroutines``: the same with ``async def`` and ``await``: the ``yield``
   moves into a tiny awaitable, ``Ready``, and the loop drives the coroutine
   with ``send(None)``. asyncio's tasks do this, with futures instead of sockets.

Each module has ``serve(listener)``: serve on a listening socket until it is
shut down (``listener.shutdown(SHUT_RDWR)``: ``accept()`` then raises
``OSError``), finish the connections in flight, close the selector, return.
Every loop registers a socket for one event at a time and takes it off the
interest list when the event comes (a one-shot wait, as ``EPOLLONESHOT``):
two system calls per wait, bought for the plainest loop.
"""
