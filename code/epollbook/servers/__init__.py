"""The servers the chapters arrive at: the article's examples with every defect in the errata fixed.

- ``level`` and ``edge``: examples 3 and 4, corrected; each is ``skeleton.EpollServer``
  plus what is level- or edge-triggered about it;
- ``threaded``: one blocking thread per connection, capped (chapter 3);
- ``skeleton``: what the two epoll servers share, with "Some facts about epoll";
- ``framing``: the HTTP part all three share (pure functions of bytes);
- ``running``: their limits, their command line, and how a signal stops them.

Run one with ``python -m epollbook serve level`` or ``serve("level")``; its own
options (``--idle-timeout``, ``--show-requests``, ...) are listed by
``python -m epollbook.servers.level --help``.
"""
